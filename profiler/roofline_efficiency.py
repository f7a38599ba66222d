"""GPU efficiencies for the roofline: fitted to Vidur's tables, or the bundled derived numbers (pure numpy).

`efficiency_table(vidur_dir)` fits every GPU Vidur measured (`profiler.vidur`) at each TP degree and
over all of them, plus its all-reduce terms, into one JSON-able table of derived numbers (what
`profiler/data/vidur_efficiencies.json` holds). `gpu_efficiency(table, gpu, tp)` picks the entry a
calibration uses: the GPU's own at this TP degree, else over all TP degrees; a GPU Vidur never measured
takes a similar one's (`EFFICIENCY_DONOR`, said in the source text) or hardware.Efficiency's defaults.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from specdec_sim.costmodel.hardware import Efficiency, GpuSpec, lookup_gpu
from specdec_sim.profiler import vidur as vd

BUNDLED_EFFICIENCIES = Path(__file__).parent / "data" / "vidur_efficiencies.json"
EFFICIENCY_DONOR = {"h200": "h100-sxm", "h100-pcie": "h100-sxm", "a100-40gb": "a100-80gb"}
VIDUR_ATTRIBUTION = ("Vidur profiling data (github.com/microsoft/vidur, commit 7d47513, MIT, Copyright (c) "
                     "Microsoft Corporation): per-layer kernel medians measured on real A100/H100 GPUs; "
                     "only fitted efficiencies are used here")


class EfficiencyError(ValueError):
    """Efficiencies that cannot be had (an unreadable Vidur directory or bundled table)."""


@dataclass(frozen=True)
class GpuEfficiency:
    efficiency: Efficiency
    source: str
    errors: dict = field(default_factory=dict)  # fit_error sets of the Vidur fits


def _vidur_entry(fit: vd.EfficiencyFit) -> dict:
    return fit.as_dict()


def efficiency_table(vidur_dir: str | Path, gpus: tuple[str, ...] = tuple(vd.VIDUR_GPUS)) -> dict:
    """Derived numbers of every Vidur fit: {gpu: {"tp": {tp: fit}, "all": fit, "allreduce": {tp: fit}}}."""
    table: dict = {"attribution": VIDUR_ATTRIBUTION, "gpus": {}}
    for key in gpus:
        gpu = lookup_gpu(key)
        series = vd.read_vidur_compute(vidur_dir, key)
        if not series:
            continue
        tps = sorted({s.tp for s in series})
        entry = {"tp": {str(tp): _vidur_entry(vd.fit_efficiency(series, gpu, tp)) for tp in tps},
                 "all": _vidur_entry(vd.fit_efficiency(series, gpu)), "allreduce": {}}
        for tp in (2, 4, 8):
            try:
                ar = vd.fit_allreduce(vidur_dir, gpu, tp)
            except vd.VidurError:
                continue
            entry["allreduce"][str(tp)] = {"latency_ms": round(ar.latency_ms, 5), "efficiency": round(ar.efficiency, 4),
                                           "mape_pct": ar.mape_pct, "max_abs_pct": ar.max_abs_pct, "points": ar.points}
        table["gpus"][key] = entry
    return table


def load_efficiency_table(vidur_dir: str | Path | None) -> dict:
    if vidur_dir is not None:
        try:
            return efficiency_table(vidur_dir)
        except vd.VidurError as exc:
            raise EfficiencyError(str(exc)) from None
    try:
        return json.loads(BUNDLED_EFFICIENCIES.read_text())
    except (OSError, ValueError) as exc:
        raise EfficiencyError(f"{BUNDLED_EFFICIENCIES}: cannot read the bundled efficiencies ({exc}); pass --vidur DIR")


def _nearest(entries: dict, tp: int) -> tuple[str, dict] | None:
    if not entries:
        return None
    key = min(entries, key=lambda t: (abs(int(t) - tp), int(t)))
    return key, entries[key]


def gpu_efficiency(table: dict, gpu: GpuSpec, tp: int) -> GpuEfficiency:
    """The GPU's efficiencies at this TP degree (a donor GPU's when Vidur never measured it)."""
    donor = gpu.key if gpu.key in table["gpus"] else EFFICIENCY_DONOR.get(gpu.key)
    if donor not in table["gpus"]:
        return GpuEfficiency(Efficiency(), f"no Vidur table for {gpu.key} or a similar GPU: hardware.Efficiency "
                                           "defaults (memory 0.8, compute 0.6, knee 0.5), not fitted")
    entry = table["gpus"][donor]
    fit = entry["tp"].get(str(tp)) or entry["all"]
    note = f"Vidur {donor} TP{tp}" if str(tp) in entry["tp"] else f"Vidur {donor}, all TP degrees"
    eff = Efficiency(memory=fit["memory"], compute=fit["compute"], knee=fit["knee"])
    errors = {f"vidur_mlp_{donor}_tp{tp if str(tp) in entry['tp'] else 'all'}": _pooled(fit["errors"])} \
        if fit.get("errors") else {}
    ar_note = ""
    if tp > 1:
        near = _nearest(entry["allreduce"], tp)
        if near is None:
            ar_note = "; all-reduce: hardware.Efficiency defaults (no Vidur table)"
        else:
            ar_tp, ar = near
            eff = replace(eff, allreduce_latency_ms=ar["latency_ms"], allreduce_efficiency=ar["efficiency"])
            ar_note = (f"; all-reduce {donor} TP{ar_tp}: latency {ar['latency_ms']} ms, "
                       f"link efficiency {ar['efficiency']}")
            errors[f"vidur_allreduce_{donor}_tp{ar_tp}"] = {"mape_pct": ar["mape_pct"],
                                                            "max_abs_pct": ar.get("max_abs_pct"),
                                                            "points": ar["points"], "unit": "% of measured"}
    source = (f"{note}: memory {eff.memory}, compute {eff.compute}, knee {eff.knee} x crossover "
              f"({fit['knee_tokens']} tokens){ar_note}")
    if donor != gpu.key:
        source = f"transferred from {donor} (Vidur has no {gpu.key} table): " + source
    return GpuEfficiency(eff, source, errors)


def _pooled(errors: dict) -> dict:
    """One fit_error entry over the model/TP series of a Vidur fit (point-weighted), the series kept."""
    n = sum(e["points"] for e in errors.values())
    mape = sum(e["mape_pct"] * e["points"] for e in errors.values()) / max(n, 1)
    return {"mape_pct": round(mape, 2), "max_abs_pct": max(e["max_abs_pct"] for e in errors.values()),
            "points": n, "unit": "% of measured per-layer time", "by_series": errors}
