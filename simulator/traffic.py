"""What traffic a simulation replays: a trace file (or bundled name), cut and re-timed, or synthetic arrivals.

`TrafficSpec` holds the traffic options of `simulate` (each field is its command-line option);
`load_traffic` turns it into a `Trace`: the trace as recorded (optionally cut to the first N
requests or S seconds, inter-arrivals scaled), or, with `rate`, Poisson/Gamma arrivals at that
rate with prompt/output lengths resampled from the trace (as `vllm bench serve --request-rate`):
`num_requests` of them (`max_requests` overrides), or all arrivals in the first `duration_s`.
`TrafficSpec.validate` refuses values the simulated clock cannot represent (arrivals beyond
`MAX_CLOCK_S`, where float seconds stop resolving microseconds), `inapplicable` names options
given where they cannot apply, and a replay shorter than `--max-requests` is refused.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass

from specdec_sim.simulator.config import MAX_CLOCK_S, ConfigError, is_int, is_real
from specdec_sim.simulator.options import option, parse_float, parse_int
from specdec_sim.traces import (BUNDLED_TRACES, FORMATS, Trace, TraceError, bundled_trace, check_enough, load_trace,
                                synthetic_trace)
from specdec_sim.acceptance.records import acceptance_request_trace, is_acceptance_trace

MAX_TIME_SCALE = 1e9  # stretches one second of trace to ~31.7 years
BURSTINESS_RANGE = (1e-3, 1e3)  # Gamma shape: CV^2 of inter-arrivals from 1000 down to 0.001
DEFAULT_TRACE = "azure-conv"  # what `simulate` and `sweep` replay when no trace is given
DEFAULT_NUM_REQUESTS = 1000  # requests generated with --rate, in `simulate` and `sweep` alike
RATE_ONLY = ("num_requests", "burstiness")  # fields that mean something only with --rate
SYNTHETIC = "synthetic"  # trace name: no file, fixed synthetic lengths (traces.synthetic_trace's), with --rate


@dataclass
class TrafficSpec:
    """The request stream of one simulation."""

    trace: str = option(DEFAULT_TRACE, "trace file (normalized CSV, Azure 2023 CSV, Mooncake JSONL, lengths CSV, or an "
                        "acceptance trace: its records are the requests and are replayed) or "
                        "a bundled name: " + ", ".join(n for n in BUNDLED_TRACES if not n.endswith("-raw"))
                        + " (sweep's default trace too)", group="traffic", metavar="FILE|NAME")
    format: str | None = option(None, "force the trace format instead of detecting it", choices=FORMATS,
                                group="traffic")
    time_scale: float = option(1.0, "multiply inter-arrival times (2 = half the rate)", parse=parse_float,
                               group="traffic")
    max_requests: int | None = option(None, "keep the first N requests (an error if a replayed trace has fewer)",
                                      parse=parse_int, group="traffic")
    duration_s: float | None = option(None, "keep arrivals in the first SECONDS (with --rate: generate arrivals "
                                            "for SECONDS)", flag="--duration", unit="s", parse=parse_float,
                                      group="traffic")
    rate: float | None = option(None, "synthetic arrivals at this rate with prompt/output lengths resampled from "
                                "--trace", unit="req/s", parse=parse_float, group="traffic")
    burstiness: float = option(1.0, "with --rate (an error without): Gamma shape of inter-arrivals (1 = Poisson, "
                                    "<1 burstier)", parse=parse_float, group="traffic")
    num_requests: int = option(DEFAULT_NUM_REQUESTS, "with --rate (an error without): requests to generate "
                                                      "(--max-requests overrides; sweep --rates uses the same default)",
                               parse=parse_int, group="traffic")

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "TrafficSpec":
        """Raise ConfigError naming the option whose value (or product) the clock cannot represent."""
        _need(self.format is None or self.format in FORMATS, "format", f"must be one of {', '.join(FORMATS)}")
        _need(is_real(self.time_scale) and 0 < self.time_scale <= MAX_TIME_SCALE, "time-scale",
              f"must be a number in (0, {MAX_TIME_SCALE:.0e}], got {self.time_scale!r}")
        _need(self.max_requests is None or (is_int(self.max_requests) and self.max_requests >= 1), "max-requests",
              f"must be an integer >= 1, got {self.max_requests!r}")
        _need(self.duration_s is None or (is_real(self.duration_s) and 0 < self.duration_s <= MAX_CLOCK_S),
              "duration", f"must be a number of seconds in (0, {MAX_CLOCK_S:.0e}], got {self.duration_s!r}")
        _need(is_int(self.num_requests) and self.num_requests >= 1, "num-requests",
              f"must be an integer >= 1, got {self.num_requests!r}")
        lo, hi = BURSTINESS_RANGE
        _need(is_real(self.burstiness) and lo <= self.burstiness <= hi, "burstiness",
              f"must be a number in [{lo:g}, {hi:g}], got {self.burstiness!r}")
        if self.rate is not None:
            _need(is_real(self.rate) and 0 < self.rate < math.inf, "rate",
                  f"must be a finite number > 0 req/s, got {self.rate!r}")
            span = self.expected_span_s()
            _need(span <= MAX_CLOCK_S, "rate", f"{self.rate:g} req/s spreads {self.synthetic_count()} requests over "
                  f"about {span:.3g} s; beyond {MAX_CLOCK_S:.0e} s float seconds no longer resolve microseconds")
        return self

    def synthetic_count(self) -> int:
        """With --rate and no --duration: how many requests are generated."""
        return self.max_requests or self.num_requests

    def expected_span_s(self) -> float:
        """With --rate: the expected time of the last arrival (the duration, if given)."""
        if self.duration_s is not None:
            return float(self.duration_s)
        return (self.synthetic_count() - 1) / float(self.rate)


def _need(cond: bool, option_name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"--{option_name}: {msg}")


def inapplicable(spec: TrafficSpec, given: set[str]) -> str | None:
    """The one-line error for an option given (`given`: field names) where it cannot apply, or None."""
    if spec.rate is None:
        for name in RATE_ONLY:
            if name in given:
                flag = "--" + name.replace("_", "-")
                hint = " (to keep the first N requests of the trace use --max-requests)" if name == "num_requests" \
                    else ""
                return f"{flag}: applies only with --rate (synthetic arrivals){hint}"
        return None
    if "num_requests" in given and "duration_s" in given:
        return "--num-requests, --duration: with --rate give one (requests to generate, or seconds of arrivals)"
    if "time_scale" in given:
        return "--time-scale: re-times a replayed trace; with --rate change the rate instead"
    return None


def trace_path(name: str) -> str:
    """A bundled trace's file, or `name` itself (a path)."""
    return str(bundled_trace(name)) if name in BUNDLED_TRACES else name


def load_traffic(spec: TrafficSpec, seed: int = 0) -> Trace:
    """The requests `spec` describes; synthetic arrivals are seeded with `seed`."""
    spec.validate()
    if spec.trace == SYNTHETIC:
        if spec.rate is None:
            raise ConfigError(f"--trace {SYNTHETIC}: synthetic lengths need --rate (arrivals at that rate)")
        return _synthetic(None, spec, seed)
    path = trace_path(spec.trace)
    if is_acceptance_trace(path):  # an acceptance trace as the request trace: its records are the requests
        trace = _from_acceptance(path, spec, seed)
    elif spec.rate is None:
        trace = _replay(path, spec)
        if spec.max_requests is not None and spec.duration_s is None:
            check_enough(trace, spec.max_requests, "--max-requests")
    else:
        trace = _synthetic(length_pool(spec), spec, seed)
    check_clock(trace, spec)
    return trace


def _from_acceptance(path: str, spec: TrafficSpec, seed: int) -> Trace:
    """Requests from an acceptance trace's records, in file order (request i replays record i mod n): all at 0
    (a closed loop with --max-concurrency), or at --rate/--burstiness arrivals; --max-requests keeps the first N."""
    if spec.rate is None:
        trace = acceptance_request_trace(path)
        return _first(trace, spec.max_requests)
    if spec.duration_s is None:
        arrivals = synthetic_trace(spec.rate, num_requests=spec.synthetic_count(), burstiness=spec.burstiness,
                                   seed=seed).arrival_s
    else:
        arrivals = _first(synthetic_trace(spec.rate, duration_s=spec.duration_s, burstiness=spec.burstiness,
                                          seed=seed), spec.max_requests).arrival_s
    return acceptance_request_trace(path, arrivals)


@functools.lru_cache(maxsize=16)
def _parsed(path: str, mtime_ns: int, size: int, fmt: str | None, time_scale: float, max_requests: int | None,
            duration_s: float | None) -> Trace:
    """A trace file parsed once per version (a sweep's runs and a capacity search's probes share it; a Trace is
    immutable)."""
    return load_trace(path, fmt=fmt, time_scale=time_scale, max_requests=max_requests, duration_s=duration_s)


def _load(path: str, fmt: str | None = None, time_scale: float = 1.0, max_requests: int | None = None,
          duration_s: float | None = None) -> Trace:
    try:
        stat = os.stat(path)
    except OSError:  # load_trace names the problem
        return load_trace(path, fmt=fmt, time_scale=time_scale, max_requests=max_requests, duration_s=duration_s)
    return _parsed(path, stat.st_mtime_ns, stat.st_size, fmt, time_scale, max_requests, duration_s)


def length_pool(spec: TrafficSpec, cut: bool = False) -> Trace:
    """The (prompt, output) pairs synthetic arrivals resample: the whole trace, or with `cut` its first
    --max-requests / --duration (what a capacity search's probes resample)."""
    path = trace_path(spec.trace)
    if cut:
        return _load(path, spec.format, 1.0, spec.max_requests, spec.duration_s)
    return _load(path, spec.format)


def _replay(path: str, spec: TrafficSpec) -> Trace:
    """The trace file cut and re-timed; a re-timing that pushes arrivals off the clock names --time-scale."""
    try:
        return _load(path, spec.format, spec.time_scale, spec.max_requests, spec.duration_s)
    except TraceError as exc:
        if spec.time_scale == 1.0:
            raise
        _load(path, spec.format, 1.0, spec.max_requests)  # raises if the file itself is bad
        raise ConfigError(f"--time-scale {spec.time_scale:g}: {exc}") from None


def _synthetic(source: Trace | None, spec: TrafficSpec, seed: int) -> Trace:
    """Arrivals at --rate with lengths resampled from `source`; a clock overflow names --rate/--burstiness."""
    try:
        if spec.duration_s is None:
            return synthetic_trace(spec.rate, num_requests=spec.synthetic_count(), burstiness=spec.burstiness,
                                   lengths_from=source, seed=seed)
        return _first(synthetic_trace(spec.rate, duration_s=spec.duration_s, burstiness=spec.burstiness,
                                      lengths_from=source, seed=seed), spec.max_requests)
    except TraceError as exc:
        raise ConfigError(f"--rate {spec.rate:g} --burstiness {spec.burstiness:g}: {exc}") from None


def _first(trace: Trace, n: int | None) -> Trace:
    """The first `n` requests of `trace` (all of them if n is None)."""
    if n is None or n >= len(trace):
        return trace
    ids = None if trace.acceptance_id is None else trace.acceptance_id[:n]
    return Trace(trace.request_id[:n], trace.arrival_s[:n], trace.prompt_tokens[:n], trace.output_tokens[:n],
                 trace.source, ids)


def check_clock(trace: Trace, spec: TrafficSpec) -> None:
    """Refuse a trace whose last arrival the simulated clock cannot resolve at microsecond precision."""
    if len(trace) and not float(trace.arrival_s[-1]) <= MAX_CLOCK_S:
        culprit = "--rate/--burstiness" if spec.rate is not None else (
            "--time-scale" if spec.time_scale != 1.0 else f"--trace {spec.trace}")
        raise ConfigError(f"{culprit}: the last arrival is at {float(trace.arrival_s[-1]):.3g} s; beyond "
                          f"{MAX_CLOCK_S:.0e} s float seconds no longer resolve microseconds")


__all__ = ["TrafficSpec", "load_traffic", "length_pool", "trace_path", "inapplicable", "check_clock", "check_enough",
           "MAX_TIME_SCALE", "SYNTHETIC", "closed_loop_times"]


def closed_loop_times(trace: Trace, rate: float | None, max_concurrency: int | None) -> Trace:
    """With --max-concurrency and no --rate every request is ready at time 0 and the slots alone pace the sends,
    as `vllm bench serve --max-concurrency N` with its default request rate inf; otherwise `trace` unchanged.
    `simulate` and `sweep` both apply it; `run_simulation` itself sends no request before its arrival time."""
    if not max_concurrency or rate is not None:
        return trace
    from dataclasses import replace

    import numpy as np

    ready = np.zeros(len(trace), dtype=float)
    ready.setflags(write=False)
    return replace(trace, arrival_s=ready)
