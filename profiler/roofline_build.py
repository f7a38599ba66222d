"""Build a calibration without a GPU: roofline with fitted efficiencies plus serving terms fitted to measurements.

    target forward = roofline_forward(target, gpu, efficiency, tp)        (costmodel.hardware)
    draft forward  = the head's or draft model's roofline, its own per-pass fixed time, its LM head on the
                     drafted rows of each pass
    step           = draft + verify + step_overhead_ms + per_request_ms x B + sampling_row_ms x B(k+1)
                     (+ spec_per_request_ms x drafting requests when speculating)
                     (+ dynamic_k_tax_ms (+ dynamic_k_tax_spec_ms) for a policy that varies k, and for a point
                        measured on an engine running PIECEWISE CUDA graphs)

1. Efficiencies (memory, compute, knee, all-reduce) of the GPU at this TP degree: fitted to Vidur's
   kernel tables when `vidur_dir` is given (`profiler.vidur`), else read from the derived numbers
   bundled in `profiler/data/vidur_efficiencies.json` (written by benchmarks/build_shipped_calibrations.py).
   A GPU Vidur never measured takes the nearest measured one's (`EFFICIENCY_DONOR`), said in provenance.
2. Serving terms (`SERVING_PARAMS`) fitted to the published points of this setting (`profiler.published`)
   and to a profile-gpu CSV when given (`profiler.roofline_serving`); a term no point constrains is transferred
   from the Llama-3.1-8B H100 fit of the same proposer kind (per layer for per-forward terms). The
   dynamic-k tax is what sets apart the levels of sources measured with PIECEWISE CUDA graphs (vLLM V1 up to
   v0.10: #20780, SpecDecode-Bench) and with FULL graphs (#32374, V0): the same mechanism a policy that
   varies k pays (vLLM #49548). The vocabulary work per row and the drafter's LM head are roofline terms.
3. Assembly: EAGLE-1/EAGLE-3 heads and draft models are "sequential" drafters whose first pass runs
   over every token of the step (first_pass "step_tokens", vLLM V1); their compute slope leaves out the
   LM head, which vLLM's proposers apply to one position per request only; n-gram lookup is a "fraction"
   of the target time (the published share). Memory facts per TP group: weights and KV of target + draft.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from specdec_sim.costmodel import Calibration, DraftCost, ForwardCoefficients, MemorySpec, check_step_times
from specdec_sim.costmodel.architectures import ARCHITECTURES, Architecture, ArchitectureError, architecture
from specdec_sim.costmodel.hardware import Efficiency, GpuSpec, lookup_gpu, roofline_forward
from specdec_sim.profiler.roofline_efficiency import (VIDUR_ATTRIBUTION, EfficiencyError, GpuEfficiency,
                                                      gpu_efficiency, load_efficiency_table)
from specdec_sim.profiler.roofline_profile_points import read_profile_points
from specdec_sim.profiler.published import (DEFAULT_PUBLISHED, Measure, group_sets, parameter, read_published,
                                            same_shape, select)
from specdec_sim.profiler.roofline_serving import fit_serving, set_error

SERVING_PARAMS = ("step_overhead_ms", "per_request_ms", "spec_per_request_ms", "target_fixed_ms", "draft_fixed_ms",
                  "dynamic_k_tax_ms", "dynamic_k_tax_spec_ms", "allreduce_latency_ms", "legacy_spec_per_request_ms")
START = np.array([1.0, 0.005, 0.005, 0.5, 0.2, 0.3, 0.5, 0.02, 0.005])
STEPS = (0.01, 0.001, 0.001, 0.01, 0.01, 0.01, 0.01, 0.001, 0.001)  # finite-difference steps, ms
UNITS = {"per_request_ms": "ms per sequence per step", "spec_per_request_ms": "ms per drafting request per "
         "speculating step", "dynamic_k_tax_ms": "ms per step of a policy that varies k (PIECEWISE graphs)",
         "dynamic_k_tax_spec_ms": "ms per speculating step of a policy that varies k",
         "allreduce_latency_ms": "ms per all-reduce (two per layer under TP)",
         "legacy_spec_per_request_ms": "ms per drafting request per speculating step of vLLM V1 <= 0.10 (prices "
                                       "the legacy sources only)"}
ROW_BYTES_PER_VOCAB_ENTRY = 24  # a sampled or verified logits row: bf16 logits read 2, fp32 cast 2 + 4, temperature
#                                 8, softmax / argmax 8 (no top-p sort); vLLM gathers the vocabulary on one GPU
DONOR_SETTING = ("llama3.1-8b", "h100-sxm", 1)  # where transferred serving terms come from
DONOR_PROPOSER = "eagle"  # ... with an EAGLE-1 head: the setting the most measurements constrain
PER_LAYER = ("target_fixed_ms", "dynamic_k_tax_ms", "dynamic_k_tax_spec_ms")  # transferred per target layer
GIB = 2**30


class BuildError(ValueError):
    """An option or input the builder cannot use (one line)."""


@dataclass(frozen=True)
class Proposer:
    """What drafts: an EAGLE-1/EAGLE-3 head, a draft model, n-gram lookup; tree = one pass over all nodes."""

    spec: str
    kind: str  # eagle, eagle3, draft, ngram
    arch: Architecture | None = None
    tree: bool = False

    @property
    def key(self) -> str:
        """Its name in published_measurements.csv."""
        return f"draft:{self.arch.name}" if self.kind == "draft" else self.kind


def eagle_head(target: Architecture, kind: str) -> Architecture:
    """The EAGLE head of `target`: a named row of the model registry, else one layer of its shape."""
    name = f"{'eagle3' if kind == 'eagle3' else 'eagle'}-{target.name}"
    for candidate in (name, name.replace("llama3-8b", "llama3.1-8b")):
        if candidate in ARCHITECTURES:
            return ARCHITECTURES[candidate]
    extra = dict(qkv_input_mult=2, fc_in_mult=3, lm_head_vocab=32000) if kind == "eagle3" else dict(fc_in_mult=2)
    return replace(target, name=name, layers=1, source=f"one {target.name} decoder layer (EAGLE layout), derived",
                   **extra)


def parse_proposer(spec: str, target: Architecture) -> Proposer:
    """eagle | eagle3 | ngram | draft:<arch> | tree:<eagle|eagle3>."""
    tree = spec.startswith("tree:")
    base = spec.split(":", 1)[1] if tree else spec
    if base in ("eagle", "eagle3"):
        return Proposer(spec, base, eagle_head(target, base), tree)
    if base == "ngram" and not tree:
        return Proposer(spec, "ngram")
    if base.startswith("draft:") and not tree:
        try:
            return Proposer(spec, "draft", architecture(base.split(":", 1)[1]))
        except ArchitectureError as exc:
            raise BuildError(f"--proposer {spec}: {exc.args[0]}") from None
    raise BuildError(f"--proposer {spec!r} must be eagle, eagle3, ngram, draft:<architecture> or tree:eagle|eagle3")


# ---- assembly -----------------------------------------------------------------------------------

def drafter_forward(arch: Architecture, gpu: GpuSpec, eff: Efficiency, tp: int) -> ForwardCoefficients:
    """A drafter's forward: the roofline, with the LM head's compute left out of the slope (logits at one
    position per request: `head_after_knee_ms`) and the knee where the whole forward's crossover puts it."""
    full = roofline_forward(arch, gpu, eff, tp)
    lm_params = arch.lm_head_params()
    body = 1.0 - lm_params / arch.linear_params()
    return replace(full, after_knee_ms=full.after_knee_ms * body)


def head_after_knee_ms(arch: Architecture, gpu: GpuSpec, eff: Efficiency, tp: int) -> float:
    """The drafter's LM head per drafted row past the knee: 2 x its parameters / (peak x compute efficiency)."""
    return 2 * arch.lm_head_params() / tp / (gpu.peak_tflops * 1e12 * eff.compute) * 1e3


def sampling_row_ms(target: Architecture, gpu: GpuSpec, eff: Efficiency) -> float:
    """Vocabulary-sized work of one sampled or verified row (logits gathered on one GPU), at the memory roofline."""
    return target.vocab * ROW_BYTES_PER_VOCAB_ENTRY / (gpu.hbm_tb_s * 1e12 * eff.memory) * 1e3


def head_weight_bytes(p: Proposer) -> int:
    """Weights a drafter adds to GPU memory: EAGLE heads share the target's embedding (EAGLE-1 also its LM head)."""
    a = p.arch
    if p.kind == "draft":
        return a.weight_bytes()
    own_head = a.lm_head_params() if a.lm_head_vocab else 0
    return (a.layers * a.layer_params() + a.fc_params() + own_head) * 2


def memory_spec(target: Architecture, p: Proposer, gpu: GpuSpec, tp: int) -> MemorySpec:
    weights = target.weight_bytes() + (head_weight_bytes(p) if p.arch else 0)
    kv = target.kv_bytes_per_token() + (p.arch.kv_bytes_per_token() if p.arch else 0)
    return MemorySpec(gpu_memory_gib=gpu.memory_gib * tp, gpu_memory_utilization=0.9,
                      weights_gib=round(weights / GIB, 3), activation_reserve_gib=1.0 * tp,
                      kv_bytes_per_token=int(kv), block_size=16)


@dataclass(frozen=True)
class Setting:
    """Everything a calibration is assembled from except the serving terms."""

    name: str
    target: Architecture
    proposer: Proposer
    gpu: GpuSpec
    tp: int
    efficiency: GpuEfficiency
    ngram_fraction: float = 0.0  # n-gram drafting as a share of the target time (SpecDecode-Bench's fit)

    def assemble(self, theta: np.ndarray, **extra) -> Calibration:
        t = dict(zip(SERVING_PARAMS, (float(v) for v in theta)))
        eff = replace(self.efficiency.efficiency, allreduce_latency_ms=t["allreduce_latency_ms"])
        target = roofline_forward(self.target, self.gpu, replace(eff, forward_fixed_ms=t["target_fixed_ms"]), self.tp)
        if self.proposer.arch is None:
            draft = DraftCost(kind="fraction", fraction_of_target=self.ngram_fraction)
        else:
            arch = self.proposer.arch
            fwd = drafter_forward(arch, self.gpu, replace(eff, forward_fixed_ms=t["draft_fixed_ms"]), self.tp)
            draft = DraftCost(kind="sequential", forward=fwd, first_pass="step_tokens",
                              head_after_knee_ms=head_after_knee_ms(arch, self.gpu, eff, self.tp))
        return Calibration(name=self.name, target=target, draft=draft, step_overhead_ms=t["step_overhead_ms"],
                           per_request_ms=t["per_request_ms"], spec_per_request_ms=t["spec_per_request_ms"],
                           sampling_row_ms=sampling_row_ms(self.target, self.gpu, eff),
                           dynamic_k_tax_ms=t["dynamic_k_tax_ms"], dynamic_k_tax_spec_ms=t["dynamic_k_tax_spec_ms"],
                           legacy_spec_per_request_ms=t["legacy_spec_per_request_ms"],
                           tensor_parallel=self.tp, max_model_len=self.target.max_position,
                           ngram_fraction_of_target=self.ngram_fraction,
                           memory=memory_spec(self.target, self.proposer, self.gpu, self.tp), **extra)


def make_setting(name: str, target: str, proposer: str, gpu: str, tp: int, table: dict,
                 measures: list[Measure]) -> Setting:
    try:
        arch, spec = architecture(target), lookup_gpu(gpu)
    except (KeyError, ArchitectureError) as exc:
        raise BuildError(exc.args[0]) from None
    if not 1 <= tp <= 64:
        raise BuildError(f"--tp {tp} must be in 1..64")
    p = parse_proposer(proposer, arch)
    key = "fit_ngram_draft_percentage"  # the bundled file's share when the given one has none
    row = parameter(measures, key) or parameter(read_published(DEFAULT_PUBLISHED), key)
    if row is None and p.kind == "ngram":
        raise BuildError(f"n-gram drafting needs the published share {key!r} (role parameter) in --published")
    return Setting(name, arch, p, spec, tp, gpu_efficiency(table, spec, tp), row.value if row else 0.0)


# ---- fitting and the whole build ----------------------------------------------------------------

@dataclass(frozen=True)
class BuildResult:
    calibration: Calibration
    sets: dict[str, list[Measure]]  # every measured set the calibration was checked against
    theta: dict[str, float]
    notes: dict[str, str]  # per serving term: fitted to which sets, or transferred from where
    donor: str = ""  # the setting transferred terms come from
    donor_sources: dict = field(default_factory=dict)


def _start_from_donor(setting: Setting, donor: BuildResult | None) -> tuple[np.ndarray, dict[str, str]]:
    """Transferred values of the serving terms: the donor's, per layer for per-forward fixed times."""
    if donor is None:
        start = START.copy()
        start[SERVING_PARAMS.index("allreduce_latency_ms")] = setting.efficiency.efficiency.allreduce_latency_ms
        return start, {n: "no measurement and no donor: starting value" for n in SERVING_PARAMS}
    d, where = donor.theta, f"the {donor.calibration.name} fit"
    donor_layers = architecture(DONOR_SETTING[0]).layers
    per_layer = d["target_fixed_ms"] / donor_layers
    is_model = setting.proposer.kind == "draft"
    values = {n: d[n] / donor_layers * setting.target.layers if n in PER_LAYER else d[n] for n in SERVING_PARAMS}
    values["allreduce_latency_ms"] = setting.efficiency.efficiency.allreduce_latency_ms  # measured by Vidur
    if is_model:
        values["draft_fixed_ms"] = per_layer * setting.proposer.arch.layers
    theta = np.array([values[n] for n in SERVING_PARAMS])
    notes = {n: f"transferred from {where}" + ("" if donor.notes.get(n, "").startswith("fitted")
                                                 else f" ({donor.notes.get(n, 'not fitted there either')})")
             for n in SERVING_PARAMS}
    for n in PER_LAYER:
        notes[n] += f", per layer ({d[n] / donor_layers:.4g} ms x {setting.target.layers} layers)"
    vidur = setting.efficiency.source.split(":")[0]
    notes["allreduce_latency_ms"] = f"transferred from Vidur's measured all-reduce latency ({vidur})"
    if is_model:
        notes["draft_fixed_ms"] = (f"transferred from {where}: its target's fixed time per layer ({per_layer:.4g} ms "
                                   f"x {setting.proposer.arch.layers} layers)")
    return theta, notes


def _is_donor(setting: Setting) -> bool:
    target, gpu, tp = DONOR_SETTING
    return (same_shape(setting.target.name, target) and (setting.gpu.key, setting.tp) == (gpu, tp)
            and setting.proposer.spec == DONOR_PROPOSER)


def _donor(setting: Setting, table: dict, measures: list[Measure]) -> BuildResult | None:
    """The fit a setting takes the engine's terms from: Llama-3.1-8B + EAGLE-1 on one H100, whose points (#32374 at
    batch 1-256, #20780, SpecDecode-Bench) constrain every serving term; a setting elsewhere with an EAGLE-3 head
    or n-gram drafting takes them through that proposer's own Llama-3.1-8B H100 fit (its drafter's time too)."""
    if _is_donor(setting):
        return None
    target, gpu, tp = DONOR_SETTING
    kind = setting.proposer.kind if setting.proposer.kind in ("eagle3", "ngram") else DONOR_PROPOSER
    own = same_shape(setting.target.name, target) and (setting.gpu.key, setting.tp) == (gpu, tp)
    if own or kind == DONOR_PROPOSER:
        kind = DONOR_PROPOSER
    name = f"{target} {kind} {gpu} TP{tp}"
    base = make_setting(name, target, kind, gpu, tp, table, measures)
    return fit_setting(base, measures, [], _donor(base, table, measures))


def fitted_terms(setting: Setting, donor: BuildResult | None, profile: bool) -> tuple[str, ...] | None:
    """The serving terms a setting fits itself (None: every term, the donor's own fit); the rest are the engine's,
    transferred from the donor. Another proposer on the donor's target fits its drafter's per-pass time; another
    target fits its per-step host time and per-forward fixed time too. All-reduces keep the latency Vidur measured
    (NCCL's): the measured points cannot tell it from the per-forward fixed time (fitted alone, the two trade off
    differently for each 70B proposer)."""
    if donor is None:
        return None
    drafter = ("draft_fixed_ms",) if setting.proposer.arch is not None else ()
    target, gpu, tp = DONOR_SETTING
    if same_shape(setting.target.name, target) and setting.tp == tp and not profile:
        return drafter
    return ("step_overhead_ms", "target_fixed_ms") + drafter


def fit_setting(setting: Setting, measures: list[Measure], profile: list[Measure],
                donor: BuildResult | None) -> BuildResult:
    """Fit the serving terms of `setting` to its measured points; unconstrained ones transferred from donor."""
    points = select(measures, setting.target.name, setting.proposer.key, setting.gpu.key, setting.tp)
    sets = group_sets(points)
    if profile:
        sets["profile"] = profile
    fit_points = [m for m in points if m.role == "fit"] + profile
    start, notes = _start_from_donor(setting, donor)
    fit = fit_serving(setting.assemble, SERVING_PARAMS, start, fit_points, STEPS,
                      only=fitted_terms(setting, donor, bool(profile)))
    used = sorted({m.set for m in fit_points})
    for name in fit.fitted:
        notes[name] = f"fitted to {', '.join(used)}"
    if setting.proposer.arch is None:
        notes.pop("draft_fixed_ms", None)
    theta = {n: round(float(v), 5) for n, v in zip(SERVING_PARAMS, fit.theta)}
    donor_sources = {name: pts[0].source for name, pts in donor.sets.items()} if donor else {}
    return BuildResult(setting.assemble(np.array(list(theta.values()))), sets, theta, notes,
                       donor.calibration.name if donor else "", donor_sources)


def _fit_error(cal: Calibration, result: BuildResult, setting: Setting) -> dict:
    errors = {}
    for name, pts in result.sets.items():
        errors[name] = {**set_error(cal, pts), "role": pts[0].role if name != "profile" else "fit"}
    for name, entry in setting.efficiency.errors.items():
        errors[name] = {**entry, "role": "efficiency fit"}
    return errors


def _description(setting: Setting, result: BuildResult) -> str:
    p = setting.proposer
    what = {"eagle": "an EAGLE-1 head", "eagle3": "an EAGLE-3 head", "ngram": "n-gram (prompt lookup) drafting",
            "draft": f"a {p.arch.name if p.arch else ''} draft model"}[p.kind] + (" (tree: one pass over all nodes)"
                                                                                  if p.tree else "")
    tp = f", tensor parallel {setting.tp}" if setting.tp > 1 else ""
    moved = any(how.startswith("transferred") for how in result.notes.values())
    fitted = any(how.startswith("fitted") for how in result.notes.values())
    terms = ("serving terms fitted to measurements" + (", the rest transferred" if moved else "") if fitted
             else f"serving terms transferred from the {result.donor} fit (no measurement of this setting)")
    return (f"{setting.target.name} target with {what} on {setting.tp}x {setting.gpu.name}{tp}: roofline with "
            f"Vidur-fitted GPU efficiencies, {terms} (ms).")


HF_IDS = {"llama3.1-8b": "meta-llama/Llama-3.1-8B-Instruct", "llama3-8b": "meta-llama/Meta-Llama-3-8B-Instruct",
          "llama3-70b": "meta-llama/Meta-Llama-3-70B-Instruct", "llama3.1-70b": "meta-llama/Llama-3.1-70B-Instruct",
          "vicuna-7b": "lmsys/vicuna-7b-v1.5", "llama2-7b": "meta-llama/Llama-2-7b-hf"}


def _summary(setting: Setting, result: BuildResult) -> str:
    """One line for `simulate`: what the numbers are and where they come from."""
    fitted = sorted({m.set for pts in result.sets.values() for m in pts if m.role == "fit"})
    moved = [n for n, how in result.notes.items() if how.startswith("transferred")]
    eff = setting.efficiency.source.split(":")[0]
    text = (f"Roofline of {setting.target.name}" + (f" + {setting.proposer.arch.name}" if setting.proposer.arch else "")
            + f" on {setting.gpu.name} datasheet figures, efficiencies from {eff}")
    text += f"; serving terms fitted to {', '.join(fitted)}" if fitted else "; no serving measurement of this setting"
    if moved:
        text += f"; {', '.join(moved)} transferred from the {result.donor} fit"
    return text


def _provenance(setting: Setting, result: BuildResult, command: str) -> dict:
    sources = {name: pts[0].source for name, pts in result.sets.items()}
    archs = {setting.target.name: setting.target.source}
    if setting.proposer.arch is not None:
        archs[setting.proposer.arch.name] = setting.proposer.arch.source
    terms = {n: {"value": v, "unit": UNITS.get(n, "ms"), "how": result.notes[n]}
             for n, v in result.theta.items() if n in result.notes}
    return {"summary": _summary(setting, result), "target_model": HF_IDS.get(setting.target.name, setting.target.name),
            "source": "; ".join(f"{k}: {v}" for k, v in sources.items()) or "no measured set of this setting",
            "sources": sources,
            "transferred_from_sources": result.donor_sources if any(
                how.startswith("transferred") for how in result.notes.values()) else {},
            "model": ("target = costmodel.hardware.roofline_forward(target, gpu, efficiency, tp) with forward_fixed_ms "
                      "= target_fixed_ms and the fitted all-reduce latency; drafter = its roofline (LM-head compute "
                      "left out of the slope and charged per drafted row: head_after_knee_ms), first pass over every "
                      "token of the step; step = draft + verify + step_overhead_ms + per_request_ms x sequences + "
                      "sampling_row_ms x logits rows (roofline: vocabulary x 24 bytes) (+ spec_per_request_ms x "
                      "drafting requests when speculating) (+ the dynamic-k tax for a policy that varies k)"),
            "efficiencies": setting.efficiency.source, "efficiency_data": VIDUR_ATTRIBUTION,
            "gpu": setting.gpu.source, "architectures": archs, "serving_terms": terms,
            "memory": ("weights and KV bytes per token of target + drafter from the architecture configs (bf16), "
                       f"summed over the TP group of {setting.tp}; EAGLE heads share the target's embedding; "
                       "90 % GPU memory utilisation, 1 GiB activation reserve per GPU"),
            "ngram_fraction_of_target": (f"{setting.ngram_fraction:g}: SpecDecode-Bench's n-gram draft share of "
                                         "verification (Llama-3.1-8B, H100), used for prompt lookup on this target"),
            "assumptions": ("batch-1 step time = TPOT x acceptance length; Fig.4 shares at 1024 KV tokens per request "
                            "(context not stated), overhead share = system overhead + rejection sampling; MT-Bench "
                            "points (#20780, #32374) at 384 KV tokens per request; #20780 and SpecDecode-Bench ran "
                            "PIECEWISE CUDA graphs (vLLM V1 <= 0.10), #32374 and V0 full graphs; a drafter runs "
                            "at the target's TP degree"),
            "setting": {"target": setting.target.name, "proposer": setting.proposer.key, "gpu": setting.gpu.key,
                        "tp": setting.tp},  # what `published.select` picks its measured points by
            "command": command, "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def build_calibration(name: str, target: str, proposer: str, gpu: str, tp: int = 1,
                      vidur_dir: str | Path | None = None, published: str | Path | None = DEFAULT_PUBLISHED,
                      profile: str | Path | None = None, command: str = "",
                      table: dict | None = None, engine: str = "v1") -> BuildResult:
    """A checked Calibration for (target, proposer, gpu, tp) and the sets it was fitted/checked against; with
    engine "v0", the V1 fit turned into vLLM V0's engine (profiler/roofline_v0.py), named NAME itself."""
    from specdec_sim.costmodel import CalibrationError
    from specdec_sim.profiler.published import PublishedError
    try:
        table = table if table is not None else load_efficiency_table(vidur_dir)
    except EfficiencyError as exc:
        raise BuildError(str(exc)) from None
    try:
        measures = read_published(published) if published is not None else []
        profile_points = read_profile_points(profile) if profile is not None else []
    except PublishedError as exc:
        raise BuildError(str(exc)) from None
    setting = make_setting(name, target, proposer, gpu, tp, table, measures)
    if setting.proposer.arch is None and any(m.proposer == "draft" for m in profile_points):
        raise BuildError(f"--profile {profile}: it has draft-model rows, but --proposer {proposer} "
                         "has no draft forward")
    result = fit_setting(setting, measures, profile_points, _donor(setting, table, measures))
    cal = result.calibration
    cal = replace(cal, description=_description(setting, result), batched_tokens_convention="exact",
                  device=f"{tp}x {setting.gpu.name}" + (f" (TP{tp})" if tp > 1 else ""),
                  fit_error=_fit_error(cal, result, setting), provenance=_provenance(setting, result, command))
    if engine == "v0":
        from specdec_sim.profiler.roofline_v0 import V0Error, v0_calibration
        try:
            cal = replace(v0_calibration(cal, setting.target, setting.proposer.arch, measures), name=name)
        except V0Error as exc:
            raise BuildError(str(exc)) from None
    elif engine != "v1":
        raise BuildError(f"--engine {engine!r} must be v1 or v0")
    try:
        cal = check_step_times(cal)
    except CalibrationError as exc:
        raise BuildError(str(exc)) from None
    return replace(result, calibration=cal)
