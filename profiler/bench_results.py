"""`vllm bench serve` result JSONs as measured runs for `build-calibration --from-bench` (standard library only).

A result file is one JSON object written by `vllm bench serve --save-result`; this module reads the keys
that describe the run and what it measured, in vLLM's own names:

* the run: `num_prompts`, `completed`, `request_rate` (a number, or vLLM's "inf"), `burstiness` (default 1),
  `max_concurrency` (null or absent: no limit), `total_input_tokens`, `total_output_tokens`, and with
  `--save-detailed` the per-request `input_lens`/`output_lens` (failed requests have output length 0);
* what it measured: `mean_tpot_ms`, `mean_itl_ms`, `mean_ttft_ms`, `output_throughput` (fitted) and
  `request_throughput` (reported);
* speculation, where the server counted it: `spec_decode_acceptance_length` (else 1 + accepted/drafts),
  `spec_decode_num_drafts`, `spec_decode_draft_tokens`, `spec_decode_accepted_tokens`,
  `spec_decode_per_position_acceptance_rates`. A file has speculation when any of these is present (vLLM
  writes none when nothing was drafted). Its k is the length of the per-position list (vLLM reports one
  rate per speculative token), else draft tokens / drafts (every draft proposes k), else the command
  line's `--num-speculative-tokens`; a file stating another k than the option is refused.

Every problem is one line naming the file and the key (`BenchError`): JSON that does not parse, a file
that is not a vllm bench serve result (a trace, a GuideLLM report, a simulate summary.json), a missing
key, a wrong type, a non-finite or out-of-range number, speculation counters with no k known.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

FITTED_METRICS = ("mean_tpot_ms", "mean_itl_ms", "mean_ttft_ms", "output_throughput")
METRIC_LABELS = {"mean_tpot_ms": "TPOT ms", "mean_itl_ms": "ITL ms", "mean_ttft_ms": "TTFT ms",
                 "output_throughput": "output tok/s"}
SIGNATURE = ("num_prompts", "request_throughput", "mean_ttft_ms", "total_input_tokens", "mean_tpot_ms")
SPEC_KEYS = ("spec_decode_acceptance_length", "spec_decode_num_drafts", "spec_decode_draft_tokens",
             "spec_decode_accepted_tokens", "spec_decode_per_position_acceptance_rates")
MAX_BYTES = 1 << 30  # --save-detailed files carry texts and every ITL; beyond 1 GiB this is not one
MAX_K = 64  # the simulator's largest proposal length
STEP_BUDGET = 60_000  # engine steps a simulated run may take (about a second) before it is sampled (bench_fit)


class BenchError(ValueError):
    """A bench result file (or the list of them) the fit cannot use; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class BenchRun:
    """One `vllm bench serve` run: how the requests were sent, their lengths, what was measured."""

    path: str
    sha256: str
    num_prompts: int
    completed: int
    request_rate: float  # requests/s; math.inf: all sent at once (paced by max_concurrency when given)
    burstiness: float
    max_concurrency: int | None
    total_input_tokens: int
    total_output_tokens: int
    measured: dict  # FITTED_METRICS -> value (ms, ms, ms, tokens/s)
    request_throughput: float
    input_lens: tuple[int, ...] | None = None  # per completed request (output length > 0), file order
    output_lens: tuple[int, ...] | None = None
    k: int = 0  # speculative tokens per draft; 0: no speculation
    acceptance_length: float | None = None  # mean tokens per drafting step, bonus included
    k_source: str = ""
    model_id: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def speculative(self) -> bool:
        return self.k > 0

    def label(self) -> str:
        """How the run was sent, e.g. 'c=8', 'rate=4', 'c=8 rate=4', 'all at once'."""
        parts = [f"c={self.max_concurrency}"] if self.max_concurrency else []
        if math.isfinite(self.request_rate):
            parts.append(f"rate={self.request_rate:g}" + (f" b={self.burstiness:g}" if self.burstiness != 1 else ""))
        return " ".join(parts) or "all at once"


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _short(v: object) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


class _Keys:
    """Typed reads of one file's keys; every failure names the file and the key."""

    def __init__(self, data: dict, path: str):
        self.data, self.path = data, path

    def fail(self, key: str, why: str) -> BenchError:
        return BenchError(f"{self.path}: key {key!r} {why}")

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def need(self, key: str) -> object:
        if key not in self.data:
            raise self.fail(key, "missing (not in this vllm bench serve result)")
        if self.data[key] is None:
            raise self.fail(key, "is null")
        return self.data[key]

    def integer(self, key: str, lowest: int = 0) -> int:
        v = self.need(key)
        if _is_num(v) and not _is_int(v) and math.isfinite(v) and float(v).is_integer():
            v = int(v)
        if not _is_int(v):
            raise self.fail(key, f"must be a whole number, not {_short(v)}")
        if v < lowest:
            raise self.fail(key, f"must be >= {lowest}, not {v}")
        return int(v)

    def number(self, key: str, positive: bool = False) -> float:
        v = self.need(key)
        if not _is_num(v):
            raise self.fail(key, f"must be a number, not {_short(v)}")
        if not math.isfinite(v):
            raise self.fail(key, f"must be a finite number, not {v}")
        if v < 0 or (positive and v == 0):
            raise self.fail(key, f"must be {'> 0' if positive else '>= 0'}, not {v:g}")
        return float(v)

    def int_list(self, key: str) -> list[int]:
        v = self.need(key)
        if not isinstance(v, list):
            raise self.fail(key, f"must be a list of whole numbers, not {_short(v)}")
        for i, item in enumerate(v):
            if not _is_int(item) or item < 0:
                raise self.fail(key, f"item {i} must be a whole number >= 0, not {_short(item)}")
        return [int(x) for x in v]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load_object(path: Path) -> tuple[dict, bytes]:
    name = str(path)
    try:
        if path.is_dir():
            raise BenchError(f"{name}: is a directory, not a vllm bench serve result file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise BenchError(f"{name}: {size} bytes, more than any vllm bench serve result (limit {MAX_BYTES})")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BenchError(f"{name}: no such file") from None
    except OSError as exc:
        raise BenchError(f"{name}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BenchError(f"{name}: not UTF-8 text, so not a vllm bench serve result JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty file" if not text.strip() else f"line {exc.lineno} column {exc.colno}: {exc.msg}"
        hint = "; a JSON-lines trace?" if exc.msg == "Extra data" else ""
        raise BenchError(f"{name}: not JSON ({what}){hint}: give vllm bench serve --save-result files") from None
    except RecursionError:
        raise BenchError(f"{name}: JSON nested too deeply to be a vllm bench serve result") from None
    if not isinstance(data, dict):
        raise BenchError(f"{name}: a JSON {type(data).__name__}, not a vllm bench serve result (one JSON object)")
    if "benchmarks" in data:
        raise BenchError(f"{name}: a GuideLLM report, not a vllm bench serve result")
    if "policy_spec" in data and "calibration_info" in data:
        raise BenchError(f"{name}: a simulate summary.json (simulated, not measured), not a vllm bench serve result")
    if not any(key in data for key in SIGNATURE):
        trace = any(key in data for key in ("timestamp", "input_length", "hash_ids", "prompt_tokens", "spans"))
        raise BenchError(f"{name}: {'a trace record' if trace else 'a JSON object'}, not a vllm bench serve result "
                         f"(none of its keys {', '.join(SIGNATURE[:3])})")
    return data, raw


def _rate(keys: _Keys) -> float:
    v = keys.need("request_rate")
    if isinstance(v, str) and v.strip().lower() in ("inf", "infinity"):
        return math.inf
    if not _is_num(v) or math.isnan(v) or v <= 0:
        raise keys.fail("request_rate", f"must be a number > 0 or \"inf\", not {_short(v)}")
    return float(v)


def _lengths(keys: _Keys, num_prompts: int) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    has_in, has_out = keys.has("input_lens"), keys.has("output_lens")
    if not (has_in or has_out):
        return None, None
    if has_in != has_out:
        raise keys.fail("output_lens" if has_in else "input_lens", "missing (input_lens and output_lens come together)")
    ins, outs = keys.int_list("input_lens"), keys.int_list("output_lens")
    if len(ins) != len(outs):
        raise keys.fail("output_lens", f"has {len(outs)} items, input_lens has {len(ins)}")
    if len(ins) > num_prompts:
        raise keys.fail("input_lens", f"has {len(ins)} items, more than num_prompts {num_prompts}")
    pairs = [(i, o) for i, o in zip(ins, outs) if o > 0 and i > 0]  # output 0: a failed request
    if not pairs:
        raise keys.fail("output_lens", "has no request with input and output length > 0")
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def _speculation(keys: _Keys, k_option: int | None) -> tuple[int, float | None, str]:
    """(k, acceptance length, where k comes from); k = 0 without speculation counters."""
    present = [key for key in SPEC_KEYS if keys.has(key)]
    if not present:
        return 0, None, ""
    drafts = keys.integer("spec_decode_num_drafts") if keys.has("spec_decode_num_drafts") else None
    drafted = keys.integer("spec_decode_draft_tokens") if keys.has("spec_decode_draft_tokens") else None
    accepted = keys.integer("spec_decode_accepted_tokens") if keys.has("spec_decode_accepted_tokens") else None
    rates = None
    if keys.has("spec_decode_per_position_acceptance_rates"):
        rates = keys.need("spec_decode_per_position_acceptance_rates")
        if not isinstance(rates, list) or not all(_is_num(r) and math.isfinite(r) and 0 <= r <= 1 for r in rates):
            raise keys.fail("spec_decode_per_position_acceptance_rates", "must be a list of rates in [0, 1]")
    if drafted == 0 or drafts == 0:
        return 0, None, ""  # counters present but nothing drafted: a run without speculation
    if keys.has("spec_decode_acceptance_length"):
        al, al_key = keys.number("spec_decode_acceptance_length"), "spec_decode_acceptance_length"
    elif drafts and accepted is not None:
        al, al_key = 1.0 + accepted / drafts, "spec_decode_accepted_tokens"
    else:
        raise keys.fail("spec_decode_acceptance_length", f"missing: {present[0]} is given, but neither the acceptance "
                        "length nor spec_decode_accepted_tokens with spec_decode_num_drafts")
    if rates:
        k, source, key = len(rates), "file: length of spec_decode_per_position_acceptance_rates", \
            "spec_decode_per_position_acceptance_rates"
    elif drafts and drafted:
        k, source, key = round(drafted / drafts), "file: spec_decode_draft_tokens / spec_decode_num_drafts", \
            "spec_decode_draft_tokens"
    elif k_option:
        k, source, key = k_option, "--num-speculative-tokens", None
    else:
        raise BenchError(f"{keys.path}: key {present[0]!r} says the run speculated, but the file does not state k "
                         "(no spec_decode_per_position_acceptance_rates, spec_decode_draft_tokens/num_drafts): give "
                         "--num-speculative-tokens K")
    if key and k_option and k_option != k:
        raise keys.fail(key, f"states k = {k}, but --num-speculative-tokens is {k_option}")
    if not 1 <= k <= MAX_K:
        raise keys.fail(key or "spec_decode_acceptance_length", f"gives k = {k}, outside 1..{MAX_K}")
    if not 1.0 <= al <= k + 1 + 1e-6:
        raise keys.fail(al_key, f"gives acceptance length {al:g}, outside [1, k + 1 = {k + 1}]")
    return k, min(al, k + 1.0), source


def read_bench(path: str | Path, k_option: int | None = None) -> BenchRun:
    """One `vllm bench serve` result; BenchError (one line, naming the file and the key) for anything unusable."""
    path = Path(path)
    data, raw = _load_object(path)
    keys = _Keys(data, str(path))
    num_prompts = keys.integer("num_prompts", 1)
    completed = keys.integer("completed", 1) if "completed" in data else num_prompts
    if completed > num_prompts:
        raise keys.fail("completed", f"is {completed}, more than num_prompts {num_prompts}")
    rate = _rate(keys)
    burstiness = keys.number("burstiness", positive=True) if keys.has("burstiness") else 1.0
    concurrency = keys.integer("max_concurrency", 1) if keys.has("max_concurrency") else None
    measured = {key: keys.number(key, positive=True) for key in FITTED_METRICS}
    throughput = keys.number("request_throughput")
    total_in, total_out = keys.integer("total_input_tokens", 1), keys.integer("total_output_tokens", 1)
    ins, outs = _lengths(keys, num_prompts)
    k, al, k_source = _speculation(keys, k_option)
    notes = []
    if completed < num_prompts:
        notes.append(f"{num_prompts - completed} of {num_prompts} requests failed; the {completed} completed are "
                     "simulated")
    if not k and measured["mean_itl_ms"] > 1.3 * measured["mean_tpot_ms"]:
        notes.append("mean ITL is well above mean TPOT, as under speculation, but the file has no spec_decode_* "
                     "counters: fitted as a run without speculation")
    model = data.get("model_id") if isinstance(data.get("model_id"), str) else ""
    return BenchRun(str(path), sha256_of(raw), num_prompts, completed, rate, burstiness, concurrency, total_in,
                    total_out, measured, throughput, ins, outs, k, al, k_source, model, tuple(notes))


def read_bench_files(paths: Sequence[str | Path], k_option: int | None = None) -> list[BenchRun]:
    """Every file of `paths` read and checked (the first bad one raises); BenchError for an empty list."""
    if not paths:
        raise BenchError("--from-bench: no vllm bench serve result file given")
    if k_option is not None and not (_is_int(k_option) and 1 <= k_option <= MAX_K):
        raise BenchError(f"--num-speculative-tokens: must be a whole number in 1..{MAX_K}, not {k_option!r}")
    return [read_bench(p, k_option) for p in paths]


__all__ = ["BenchError", "BenchRun", "FITTED_METRICS", "METRIC_LABELS", "STEP_BUDGET", "read_bench",
           "read_bench_files"]
