"""Real request traces shipped with the package (see ``traces/data/SOURCE.md``).

``bundled_trace("azure-conv")`` gives the file path; pass it to ``load_trace``.
"""
from __future__ import annotations

from pathlib import Path

from specdec_sim.traces.model import TraceError

DATA_DIR = Path(__file__).resolve().parent / "data"

BUNDLED_TRACES: dict[str, str] = {
    "azure-conv": "azure2023_conv_first30min.csv",
    "azure-code": "azure2023_code_first30min.csv",
    "mooncake-conv": "mooncake_conversation_first30min.raw.jsonl",  # with hash_ids (prefix caching)
    "sharegpt": "sharegpt_llama31_8b_5k_poisson10.csv",
    "sharegpt-300-long-outputs": "sharegpt_llama31_8b_poisson10.csv",
    "arxiv-lengths": "arxiv_summarization_lengths.csv",
    "sharegpt-lengths": "sharegpt_llama31_8b_lengths.csv",
    "cnn-lengths": "cnn_dailymail_llama31_8b_lengths.csv",
    "gsm8k-lengths": "gsm8k_llama31_8b_lengths.csv",
    "instructcoder-lengths": "instructcoder_llama31_8b_lengths.csv",
    "azure-conv-raw": "azure2023_conv_sample.raw.csv",
    "mooncake-raw": "mooncake_conversation_sample.raw.jsonl",
}


def bundled_trace(name: str) -> Path:
    """Path of a bundled trace by short name (its file name is accepted too)."""
    file_name = BUNDLED_TRACES.get(name)
    if file_name is None and name in BUNDLED_TRACES.values():
        file_name = name
    if file_name is None:
        raise TraceError(f"unknown bundled trace {name!r}; known names: {', '.join(BUNDLED_TRACES)}")
    return DATA_DIR / file_name
