"""specdec-sim: a calibrated GPU profiler and a SimPy cluster simulator for speculative decoding.

The Python API (what `simulate` does, from a script or a notebook)::

    import specdec_sim as sds

    trace = sds.load_traffic(sds.TrafficSpec(trace="sharegpt", rate=8, num_requests=400), seed=0)
    config = sds.SimConfig(calibration="llama3.1-8b-eagle-h100", acceptance="mt-bench")
    result = sds.run_simulation(trace, config, policy="smartspec", seed=0)
    result.summary["mean_e2el_ms"], result.requests.head(), result.steps.head()

Names (see `_API` below): simulation (`run_simulation`, `SimResult`, `SimConfig`), traffic
(`TrafficSpec`, `load_traffic`, `load_trace`, `synthetic_trace`, `bundled_trace`, `Trace`),
policies (`make_policy`, `Policy`, `DecodeBatch`, `StepOutcome`), step times
(`load_calibration`, `CostModel`, `uniform_shape`), sweeps (`SweepSpec`, `RunSpec`, `run_sweep`,
`simulate_run`, `summarize_sweep`, `speedup_table`, `plot_*`) and profile fits (`merge_passes`,
`predict_ms`, `samples_from_rows`; no torch needed). They are imported on first use, so `import specdec_sim.costmodel` stays light. The packages below this one:
`costmodel` (step times), `traces`, `policies`, `simulator` (engine, CLI; `simulator.sweep` for
sweeps), `profiler` (needs the `profile` extra: torch, transformers).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API: dict[str, str] = {  # public name -> "module:attribute"
    "run_simulation": "specdec_sim.simulator.engine:run_simulation",
    "SimResult": "specdec_sim.simulator.engine:SimResult",
    "SimConfig": "specdec_sim.simulator.config:SimConfig",
    "TrafficSpec": "specdec_sim.simulator.traffic:TrafficSpec",
    "load_traffic": "specdec_sim.simulator.traffic:load_traffic",
    "load_trace": "specdec_sim.traces:load_trace",
    "synthetic_trace": "specdec_sim.traces:synthetic_trace",
    "bundled_trace": "specdec_sim.traces:bundled_trace",
    "Trace": "specdec_sim.traces:Trace",
    "make_policy": "specdec_sim.policies:make_policy",
    "Policy": "specdec_sim.policies:Policy",
    "DecodeBatch": "specdec_sim.policies:DecodeBatch",
    "StepOutcome": "specdec_sim.policies:StepOutcome",
    "load_calibration": "specdec_sim.costmodel:load_calibration",
    "CostModel": "specdec_sim.costmodel:CostModel",
    "uniform_shape": "specdec_sim.costmodel:uniform_shape",
    "SweepSpec": "specdec_sim.simulator.sweep.runner:SweepSpec",
    "RunSpec": "specdec_sim.simulator.sweep.runner:RunSpec",
    "run_sweep": "specdec_sim.simulator.sweep.runner:run_sweep",
    "simulate_run": "specdec_sim.simulator.sweep.runner:simulate",
    "summarize_sweep": "specdec_sim.simulator.sweep.plots:mean_over_seeds",
    "speedup_table": "specdec_sim.simulator.sweep.plots:speedup_table",
    "plot_latency_vs_rate": "specdec_sim.simulator.sweep.plots:plot_latency_vs_rate",
    "plot_speedup_vs_rate": "specdec_sim.simulator.sweep.plots:plot_speedup_vs_rate",
    "plot_timeline": "specdec_sim.simulator.sweep.plots:plot_timeline",
    "merge_passes": "specdec_sim.profiler.measure_fit:merge_passes",
    "predict_ms": "specdec_sim.profiler.measure_fit:predict_ms",
    "samples_from_rows": "specdec_sim.profiler.measure_fit:samples_from_rows",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'specdec_sim' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
