"""Request traces for the simulator: load real traces, make synthetic ones.

``load_trace`` reads normalized CSV, Azure LLM inference 2023 CSV, Mooncake JSONL
and lengths-only CSV files; ``synthetic_trace`` makes Poisson/Gamma arrivals;
``bundled_trace`` finds the real traces shipped in ``traces/data``.
"""
from specdec_sim.traces.bundled import BUNDLED_TRACES, bundled_trace
from specdec_sim.traces.model import Trace, TraceError
from specdec_sim.traces.readers import FORMATS, load_trace
from specdec_sim.traces.synthetic import synthetic_trace

__all__ = ["BUNDLED_TRACES", "FORMATS", "Trace", "TraceError", "bundled_trace", "load_trace", "synthetic_trace"]
