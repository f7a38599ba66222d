"""What traffic a simulation replays: a trace file (or bundled name), cut and re-timed, or synthetic arrivals.

`TrafficSpec` holds the traffic options of `simulate` (each field is its command-line option);
`load_traffic` turns it into a `Trace`: the trace as recorded (optionally cut to the first N
requests or S seconds, inter-arrivals scaled), or, with `rate`, Poisson/Gamma arrivals at that
rate with prompt/output lengths resampled from the trace (as `vllm bench serve --request-rate`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from specdec_sim.simulator.config import ConfigError
from specdec_sim.simulator.options import option, parse_float, parse_int
from specdec_sim.traces import BUNDLED_TRACES, FORMATS, Trace, bundled_trace, load_trace, synthetic_trace


@dataclass
class TrafficSpec:
    """The request stream of one simulation."""

    trace: str = option("azure-conv", "trace file (normalized CSV, Azure 2023 CSV, Mooncake JSONL, lengths CSV) or "
                        "a bundled name: " + ", ".join(n for n in BUNDLED_TRACES if not n.endswith("-raw")),
                        group="traffic", metavar="FILE|NAME")
    format: str | None = option(None, "force the trace format instead of detecting it", choices=FORMATS,
                                group="traffic")
    time_scale: float = option(1.0, "multiply inter-arrival times (2 = half the rate)", parse=parse_float,
                               group="traffic")
    max_requests: int | None = option(None, "keep the first N requests", parse=parse_int, group="traffic")
    duration_s: float | None = option(None, "keep arrivals in the first SECONDS", flag="--duration", unit="s",
                                      parse=parse_float, group="traffic")
    rate: float | None = option(None, "synthetic arrivals at this rate with prompt/output lengths resampled from "
                                "--trace", unit="req/s", parse=parse_float, group="traffic")
    burstiness: float = option(1.0, "with --rate: Gamma shape of inter-arrivals (1 = Poisson, <1 burstier)",
                               parse=parse_float, group="traffic")
    num_requests: int = option(1000, "with --rate: requests to generate (--max-requests overrides)", parse=parse_int,
                               group="traffic")

    def to_dict(self) -> dict:
        return asdict(self)


def trace_path(name: str) -> str:
    """A bundled trace's file, or `name` itself (a path)."""
    return str(bundled_trace(name)) if name in BUNDLED_TRACES else name


def load_traffic(spec: TrafficSpec, seed: int = 0) -> Trace:
    """The requests `spec` describes; synthetic arrivals are seeded with `seed`."""
    path = trace_path(spec.trace)
    if spec.rate is None:
        return load_trace(path, fmt=spec.format, time_scale=spec.time_scale, max_requests=spec.max_requests,
                          duration_s=spec.duration_s)
    if spec.rate <= 0:
        raise ConfigError("--rate: must be > 0 req/s")
    source = load_trace(path, fmt=spec.format)
    return synthetic_trace(spec.rate, num_requests=spec.max_requests or spec.num_requests,
                           burstiness=spec.burstiness, lengths_from=source, seed=seed)


__all__ = ["TrafficSpec", "load_traffic", "trace_path"]
