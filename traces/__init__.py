"""Request traces for the simulator: load real traces, make synthetic ones.

``load_trace`` reads normalized CSV, Azure LLM inference 2023 CSV, Mooncake JSONL,
lengths-only CSV and Parquet files (streaming: it stops at ``max_requests``);
``check_enough`` says when a replayed trace has fewer requests than asked for;
``synthetic_trace`` makes Poisson/Gamma arrivals; ``bundled_trace`` finds the
traces shipped in ``traces/data``.
"""
from specdec_sim.traces.bundled import BUNDLED_TRACES, bundled_trace
from specdec_sim.traces.model import MAX_TIME_S, MAX_TOKENS, Trace, TraceError, check_enough
from specdec_sim.traces.readers import FORMATS, load_trace
from specdec_sim.traces.synthetic import synthetic_trace

__all__ = ["BUNDLED_TRACES", "FORMATS", "MAX_TIME_S", "MAX_TOKENS", "Trace", "TraceError", "bundled_trace",
           "check_enough", "load_trace", "synthetic_trace"]
