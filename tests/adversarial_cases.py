"""Adversarial CLI cases and the fork server that runs them fast, isolated and bounded in time.

A `Case` is one command line of `simulate`, `sweep` or `profile-gpu` with what it may do: `error`
(exit 2, one stderr line `PROG: error: ...`, naming `names` when given), `ok` (exit 0) or
`either`. Hundreds of cases at ~1 s of interpreter start each would not fit the test budget, so
`run_cases` starts one server process (tests/adversarial_server.py) that imports the CLIs once and
forks a child per case: stdin from /dev/null, stdout/stderr to files, a memory cap, and a
wall-clock limit enforced by the server (SIGKILL; reported as `timed_out`). The child calls the
command's `main(argv)` as its console script does; an exception escaping `main` prints a
traceback exactly as the console script would, which the tests then find on stderr. The tables of
hostile trace files, calibrations and policy specs live here too, shared by the tests.
"""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CASE_TIMEOUT_S = 60.0
MEMORY_CAP_BYTES = 3 * 2**30


@dataclass
class Case:
    """One command line and what it may do. `{tmp}` in argv is replaced by the case's own folder."""

    id: str
    prog: str
    argv: list[str]
    expect: str = "error"  # "error" (exit 2, one line), "ok" (exit 0) or "either"
    names: str | None = None  # text the error line must contain (the file or the option)
    must_mention: str | None = None  # extra text (case-insensitive) the error line must contain


@dataclass
class Outcome:
    """What a case did: exit code (negative: killed by that signal), output, time, timeout."""

    id: str
    rc: int
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool
    workdir: str = ""
    problems: list[str] = field(default_factory=list)


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def judge(case: Case, out: Outcome) -> list[str]:
    """Every way `out` breaks the rules for `case` (empty when it holds)."""
    problems: list[str] = []
    if out.timed_out:
        return [f"no result within {CASE_TIMEOUT_S:.0f} s (hang)"]
    if "Traceback" in out.stderr or "Traceback" in out.stdout:
        problems.append("traceback")
    allowed = {"error": (2,), "ok": (0,), "either": (0, 2)}[case.expect]
    if out.rc not in allowed:
        problems.append(f"exit code {out.rc}, expected {' or '.join(map(str, allowed))}")
    if out.rc == 2:
        lines = stderr_lines(out.stderr)
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, expected exactly one")
        if not lines or not lines[-1].startswith(f"{case.prog}: error:"):
            problems.append(f"error line does not start with '{case.prog}: error:'")
        text = lines[-1] if lines else ""
        if case.names and case.names not in text:
            problems.append(f"error line does not name {case.names!r}")
        if case.must_mention and case.must_mention.lower() not in text.lower():
            problems.append(f"error line does not mention {case.must_mention!r}")
    if out.rc == 0:
        problems += check_summaries(Path(out.workdir))
    return problems


def _non_finite(data: Any, prefix: str = "") -> list[str]:
    """Keys whose number is NaN or infinite (JSON's NaN/Infinity), recursively."""
    bad: list[str] = []
    if isinstance(data, float) and not math.isfinite(data):
        bad.append(prefix or "<value>")
    elif isinstance(data, dict):
        for key, value in data.items():
            bad += _non_finite(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            bad += _non_finite(value, f"{prefix}[{i}]")
    return bad


def check_summaries(workdir: Path) -> list[str]:
    """A successful run's summary.json files: finite numbers (null where undefined) and, when
    requests completed, positive end-to-end latency (float resolution gives exactly 0)."""
    problems: list[str] = []
    for path in sorted(workdir.rglob("summary.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name}: does not parse: {exc}")
            continue
        bad = _non_finite(data)
        if bad:
            problems.append(f"{path.parent.name}/summary.json: non-finite {', '.join(bad[:4])}")
        if (data.get("completed") or 0) > 0 and not (data.get("mean_e2el_ms") or 0) > 0:
            problems.append(f"{path.parent.name}/summary.json: completed requests with mean E2E "
                            f"{data.get('mean_e2el_ms')!r} ms")
    return problems


def run_cases(cases: list[Case], workdir: Path, jobs: int = 2, timeout_s: float = CASE_TIMEOUT_S) -> dict[str, Outcome]:
    """Run every case through one fork server; results by case id."""
    for case in cases:
        (workdir / case.id).mkdir(parents=True, exist_ok=True)
    request = {"cases": [asdict(c) for c in cases], "workdir": str(workdir), "jobs": jobs,
               "timeout_s": timeout_s, "memory_cap": MEMORY_CAP_BYTES}
    budget = timeout_s * (len(cases) / jobs + 2) + 60
    server = Path(__file__).resolve().with_name("adversarial_server.py")
    proc = subprocess.run([sys.executable, str(server), "--serve"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=budget, cwd=str(workdir))
    results: dict[str, Outcome] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            results[data["id"]] = Outcome(**data)
    if proc.returncode != 0 or len(results) != len(cases):
        raise RuntimeError(f"fork server failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    return results


# --- case tables: hostile files and specs ------------------------------------------------------

HEADER = "request_id,arrival_time_s,prompt_tokens,output_tokens"


def _rows(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def _good_rows(n: int = 8) -> list[str]:
    return [f"{i},{i * 0.5},{100 + i},{20 + i}" for i in range(n)]


def _parquet(columns: dict) -> bytes:
    import io

    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buf, index=False)
    return buf.getvalue()


def _vllm_result() -> bytes:
    """A `vllm bench serve --save-result` JSON (keys as vLLM writes them)."""
    return json.dumps({"date": "20250101-120000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B",
                       "num_prompts": 10, "request_rate": 4.0, "burstiness": 1.0, "max_concurrency": None,
                       "duration": 3.2, "completed": 10, "total_input_tokens": 2000, "total_output_tokens": 1200,
                       "request_throughput": 3.1, "output_throughput": 375.0, "mean_ttft_ms": 40.1,
                       "input_lens": [200] * 10, "output_lens": [120] * 10, "ttfts": [0.04] * 10,
                       "itls": [[0.01] * 119] * 10, "errors": [""] * 10}, indent=2).encode()


def _mooncake(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


MOONCAKE_OK = ['{"timestamp": 0, "input_length": 100, "output_length": 20, "hash_ids": [1]}',
               '{"timestamp": 500, "input_length": 120, "output_length": 30, "hash_ids": [2]}']

# name -> (file name, content, expectation, must_mention)
BAD_TRACES: dict[str, tuple[str, bytes, str, str | None]] = {
    "empty": ("empty.csv", b"", "error", None),
    "blank_lines": ("blank.csv", b"\n\n  \n", "error", None),
    "header_only": ("header_only.csv", _rows(), "error", None),
    "missing_column": ("missing_col.csv", b"request_id,arrival_time_s,prompt_tokens\n0,0.0,10\n1,0.5,12\n",
                       "error", None),
    "non_numeric": ("non_numeric.csv", _rows("0,0.0,abc,10", "1,0.5,10,10"), "error", None),
    "negative_prompt": ("neg_prompt.csv", _rows("0,0.0,-5,10", "1,0.5,10,10"), "error", None),
    "negative_output": ("neg_output.csv", _rows("0,0.0,10,-3", "1,0.5,10,10"), "error", None),
    "nan_prompt": ("nan_prompt.csv", _rows("0,0.0,nan,10", "1,0.5,10,10"), "error", None),
    "inf_output": ("inf_output.csv", _rows("0,0.0,10,inf", "1,0.5,10,10"), "error", None),
    "beyond_int64": ("beyond_int64.csv", _rows(f"0,0.0,{10**30},10", "1,0.5,10,10"), "error", None),
    "huge_prompt": ("huge_prompt.csv", _rows(f"0,0.0,{10**15},10", *_good_rows()[1:]), "either", None),
    "fractional_tokens": ("fractional.csv", _rows("0,0.0,10.5,10", "1,0.5,10,10"), "either", None),
    "nan_time": ("nan_time.csv", _rows("0,nan,10,10", "1,0.5,10,10"), "error", None),
    "inf_time": ("inf_time.csv", _rows("0,0.0,10,10", "1,inf,10,10"), "error", None),
    "negative_time": ("neg_time.csv", _rows("0,-5.0,10,10", "1,0.5,10,10"), "either", None),
    "huge_time_1e20": ("time_1e20.csv", _rows("0,0.0,10,10", "1,1e20,10,10"), "error", None),
    "huge_time_1e308": ("time_1e308.csv", _rows("0,0.0,10,10", "1,1e308,10,10"), "error", None),
    "unsorted_time": ("unsorted.csv", _rows("0,5.0,100,20", "1,1.0,100,20", "2,3.0,100,20"), "either", None),
    "duplicate_ids": ("dup_ids.csv", _rows("0,0.0,100,20", "0,0.5,100,20", "1,1.0,100,20"), "either", None),
    "binary_garbage": ("garbage.csv", random.Random(12).randbytes(4096), "error", None),
    "nul_bytes": ("nul.csv", _rows("0,0.0,1\x000,10", "1,0.5,10,10"), "error", None),
    "parquet_wrong_columns": ("wrong.parquet", _parquet({"a": [1, 2], "b": [3, 4]}), "error", None),
    "parquet_valid": ("valid.parquet", _parquet({"request_id": [0, 1, 2], "arrival_time_s": [0.0, 0.5, 1.0],
                                                 "prompt_tokens": [100, 120, 90], "output_tokens": [20, 30, 25]}),
                      "ok", None),
    "vllm_result_json": ("vllm_result.json", _vllm_result(), "error", "vllm"),
    "truncated_jsonl": ("cut.jsonl", _mooncake(*MOONCAKE_OK, '{"timestamp": 900, "input_len'), "error", None),
    "jsonl_nan": ("nan.jsonl", _mooncake(MOONCAKE_OK[0], '{"timestamp": NaN, "input_length": 1, "output_length": 1}'),
                  "error", None),
    "jsonl_not_objects": ("list.jsonl", _mooncake("[1, 2, 3]", "[4, 5, 6]"), "error", None),
    "crlf": ("crlf.csv", _rows(*_good_rows()).replace(b"\n", b"\r\n"), "ok", None),
    "bom": ("bom.csv", b"\xef\xbb\xbf" + _rows(*_good_rows()), "ok", None),
    "utf16": ("utf16.csv", _rows(*_good_rows()).decode().encode("utf-16"), "either", None),
    "long_line_cell": ("long_cell.csv", _rows("0,0.0," + "9" * 1_000_000 + ",10", "1,0.5,10,10"), "error", None),
    "long_line_header": ("long_header.csv", b"a" * 2_000_000 + b"\n1\n", "error", None),
    "azure_negative": ("azure_neg.csv", b"TIMESTAMP,ContextTokens,GeneratedTokens\n"
                       b"2023-11-16 18:15:46.6805900,-374,44\n", "error", None),
}
SPECIAL_TRACES = {"dev_zero": ("/dev/zero", "error"), "directory": ("{tmp}", "error"),
                  "missing_file": ("{tmp}/no_such_trace.csv", "error")}



# --- malformed calibrations and policy specs --------------------------------------------------------

def shipped_calibration() -> dict:
    from specdec_sim.costmodel.calibration import CALIBRATION_DIR, DEFAULT_CALIBRATION

    return json.loads((CALIBRATION_DIR / f"{DEFAULT_CALIBRATION}.json").read_text())


def calibration_variants() -> dict[str, tuple[bytes, str]]:
    base = shipped_calibration()

    def changed(path: str, value) -> bytes:
        from conftest import edited_json

        return json.dumps(edited_json(json.loads(json.dumps(base)), path, value)).encode()

    return {
        "valid_copy": (json.dumps(base).encode(), "ok"),
        "missing_target": (changed("target", KeyError), "error"),
        "missing_name": (changed("name", KeyError), "either"),
        "target_null": (changed("target", None), "error"),
        "target_list": (changed("target", [1, 2]), "error"),
        "fixed_ms_string": (changed("target.fixed_ms", "abc"), "error"),
        "fixed_ms_nan": (changed("target.fixed_ms", float("nan")), "error"),
        "fixed_ms_inf": (changed("target.fixed_ms", float("inf")), "error"),
        "fixed_ms_bool": (changed("target.fixed_ms", True), "either"),
        "per_token_negative": (changed("target.per_batched_token_ms", -0.05), "error"),
        "per_seq_very_negative": (changed("target.per_seq_ms", -1.0), "error"),
        "draft_forward_negative": (changed("draft.forward.fixed_ms", -5.0), "error"),
        "draft_first_pass_unknown": (changed("draft.first_pass", "sideways"), "error"),
        "step_overhead_negative": (changed("step_overhead_ms", -1.0), "error"),
        "step_overhead_nan": (changed("step_overhead_ms", float("nan")), "error"),
        "tensor_parallel_zero": (changed("tensor_parallel", 0), "error"),
        "max_model_len_negative": (changed("max_model_len", -1), "error"),
        "ngram_fraction_negative": (changed("ngram_fraction_of_target", -0.1), "error"),
        "draft_kind_unknown": (changed("draft.kind", "quantum"), "error"),
        "overhead_nan": (changed("overhead_fraction", float("nan")), "error"),
        "kv_bytes_zero": (changed("memory.kv_bytes_per_token", 0), "error"),
        "block_size_zero": (changed("memory.block_size", 0), "error"),
        "memory_negative": (changed("memory.gpu_memory_gib", -80.0), "error"),
        "unknown_target_key": (changed("target.warp_factor", 9), "error"),
        "json_list": (b"[1, 2, 3]", "error"),
        "json_string": (b'"llama"', "error"),
        "empty_file": (b"", "error"),
        "binary": (random.Random(5).randbytes(1024), "error"),
        "truncated": (json.dumps(base).encode()[:200], "error"),
    }


POLICY_SPECS = {
    "fixed_colon": ("fixed:", "either"), "fixed_neg": ("fixed:-1", "error"), "fixed_k_nan": ("fixed:k=nan", "error"),
    "fixed_k_inf": ("fixed:k=inf", "error"), "fixed_k_huge": (f"fixed:k={10**30}", "error"),
    "fixed_k_digits": ("fixed:" + "1" * 10_000, "error"), "fixed_two_k": ("fixed:3,4", "error"),
    "smartspec_interval_0": ("smartspec:interval=0", "error"), "smartspec_bias_nan": ("smartspec:bias=nan", "error"),
    "smartspec_unknown": ("smartspec:warp=9", "error"), "turbospec_window_0": ("turbospec:window=0", "error"),
    "greedy_prior_neg": ("goodput-greedy:prior=-1", "error"), "unknown_name": ("nope", "error"),
    "os_system": ("os:system", "error"), "os_abort": ("os:abort", "error"), "sys_exit": ("sys:exit", "error"),
    "json_loads": ("json:loads", "error"), "builtins_input": ("builtins:input", "error"),
    "missing_module": ("no_such_module_xyz:Policy", "error"), "colon_only": (":", "error"),
    "four_parts": ("a:b:c:d", "error"), "empty_params": ("smartspec:,,,", "either"),
    "long_name": ("p" * 100_000, "error"), "unicode_name": ("fïxed:3", "error"),
    "unicode_digits": ("fixed:k=\u0663", "either"), "emoji": ("\U0001f680:\U0001f680", "error"),
    "vllm_table_garbage": ("vllm-table:table=zz", "error"),
}
