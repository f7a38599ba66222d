"""Copy the published figures the calibration builder uses into profiler/data/published_measurements.csv.

    python benchmarks/extract_published_measurements.py --source ../shared/data/measurements/published_spec_decode.csv

Reads the project's collection of public speculative-decoding measurements (one value a row, each
citing its thread or paper) and writes only the rows `build-calibration` fits or checks, in the
builder's format (profiler/published.py), with what was derived or assumed said in `note`
(profiler/data/SOURCE.md describes every set). Run by hand when the collection changes; nothing
reads the collection at run time or in tests.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from specdec_sim.profiler.published import COLUMNS, DEFAULT_PUBLISHED
from specdec_sim.acceptance.rates import position_tokens
from specdec_sim.safe_output import write_text_atomic

ROLES = {"sdb_fit_coefficients": "parameter", "vllm9298_v0_stages": "parameter", "sdb_extrapolated_steps": "check", "vllm32374_best_k": "check"}
# the engine generation of each source: vLLM V1 up to v0.10 ("legacy": PIECEWISE CUDA graphs by default, FULL_AND_PIECEWISE
# from v0.11, 2025-10); #32374 profiled a 2026 engine and #12101 ran V0, which captured the whole decode forward
LEGACY_SETS = ("vllm20780_", "sdb_", "fig4_")
PR32374_CONTEXT = 384  # assumed: MT-Bench prompt ~128 tokens with the chat template + half of outputs up to ~512
PR32374_SOURCE = ("vLLM PR #32374 (dynamic speculative decoding), example config batch_stats: per-step ITL of "
                  "Llama-3.1-8B-Instruct + EAGLE-1, H100 inferred, vLLM V1 2026")
SRC_20780 = "vLLM issue #20780 (ekagra-ranjan, 2025-07-10), vLLM V1 ~v0.9, H100 inferred, MT-Bench, batch 1"
SRC_SDB = ("SpecDecode-Bench simulator/predictor.py class Llama8BH100 (github.com/SpecDecode-Bench/simulator), "
           "vLLM v0.10.1, 1x H100")
SRC_FIG4 = "SpecDecode-Bench paper arXiv 2601.11580 Fig.4 (execution-time breakdown), vLLM v0.10.1, H100"
FIG4_PROPOSERS = {"Baseline (no SD)": "none", "N-gram": "ngram", "Eagle": "eagle", "Eagle3": "eagle3",
                  "Draft-model": "draft:llama3.2-1b"}


def row(**kw) -> dict:
    out = {c: kw.get(c, "") for c in COLUMNS}
    out["role"] = ROLES.get(out["set"], "fit")
    out["engine_era"] = "legacy" if out["set"].startswith(LEGACY_SETS) else "current"
    return out


def head_of(method: str) -> str:
    return "eagle3" if "EAGLE-3" in method else "eagle"


def vllm_20780(rows: list[dict]) -> list[dict]:
    al = {(head_of(r["draft_method"]), int(r["k"])): float(r["value"]) for r in rows
          if "20780" in r["source"] and r["metric"] == "acceptance_length"}
    out = []
    for r in rows:
        if "20780" not in r["source"] or r["metric"] != "mean_TPOT":
            continue
        k = int(r["k"])
        common = dict(target="llama3.1-8b", gpu="h100-sxm", tp=1, batch=1, k=k, context_tokens=PR32374_CONTEXT,
                      metric="tpot_ms", value=r["value"], unit="ms", source=SRC_20780)
        if k == 0:
            out.append(row(set="vllm20780_vanilla", proposer="none", acceptance_length=1.0, **common,
                           note=f"vanilla TPOT at batch 1; context {PR32374_CONTEXT} assumed (MT-Bench, as #32374)"))
        else:
            head = head_of(r["draft_method"])
            out.append(row(set=f"vllm20780_{head}", proposer=head, acceptance_length=al[(head, k)], **common,
                           note=f"{r['draft_method']}; AL = published mean acceptance length at this k; "
                                "step time = TPOT x AL"))
    return out


def specdecode_bench(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if "predictor.py" in r["source"] and r["metric"].startswith("fit_"):
            out.append(row(set="sdb_fit_coefficients", target="llama3.1-8b", proposer="*", gpu="h100-sxm", tp=1,
                           metric=r["metric"], value=r["value"], unit=r["unit"], source=SRC_SDB,
                           note="published linear fit coefficient (seconds), not a raw measurement"))
    out.append(row(set="sdb_overhead", target="llama3.1-8b", proposer="*", gpu="h100-sxm", tp=1,
                   metric="step_overhead_ms", value=round(1.20683946e-3 * 1e3, 8), unit="ms", source=SRC_SDB,
                   note="fit_overhead_constant_per_step 1.20683946e-3 s, every step"))
    for r in rows:
        if "predictor.py" in r["source"] and r["metric"].startswith("derived_"):
            spec = "spec" in r["metric"]
            batch = int(r["rate_or_concurrency"].split("=")[1])
            name = "sdb_fit_steps" if batch <= 64 else "sdb_extrapolated_steps"  # fitted at B = 1..64 by SDB
            out.append(row(set=name, target="llama3.1-8b", proposer="eagle" if spec else "none",
                           gpu="h100-sxm", tp=1, batch=batch,
                           k=3 if spec else 0, context_tokens=1024, metric="step_ms", value=r["value"], unit="ms",
                           source=SRC_SDB, note="DERIVED: the published fit evaluated at this batch (fitted at "
                                                "B = 1..64), about 1024 KV tokens per request"))
    return out


def fig4(rows: list[dict]) -> list[dict]:
    shares: dict[tuple, dict] = {}
    for r in rows:
        if "Fig.4" in r["source"]:
            target = "llama3.1-8b" if "8B" in r["target"] else "llama3-70b"
            key = (target, 1 if target == "llama3.1-8b" else 4, FIG4_PROPOSERS[r["draft_method"]],
                   int(r["rate_or_concurrency"].split("=")[1]))
            shares.setdefault(key, {})[r["metric"].replace("time_fraction_", "")] = float(r["value"])
    out = []
    for (target, tp, prop, batch), s in shares.items():
        tag = ("8b" if tp == 1 else "70b") + "_" + ("baseline" if prop == "none" else prop.split(":")[0])
        parts = {"draft": s["draft"], "verify": s["verify"], "overhead": round(s["overhead"] + s["sample"], 2)}
        for part, value in parts.items():
            if prop == "none" and part == "draft":
                continue
            note = ("share of run time; overhead = system overhead + rejection sampling (%.1f + %.1f)"
                    % (s["overhead"], s["sample"]) if part == "overhead" else "share of run time")
            if prop.startswith("draft:"):
                note += "; draft model not named in the figure, Llama-3.2-1B assumed"
            out.append(row(set=f"fig4_{tag}", target=target, proposer=prop, gpu="h100-sxm", tp=tp, batch=batch,
                           k=0 if prop == "none" else 3, context_tokens=1024, metric=f"share_{part}_pct",
                           value=value, unit="% of step", source=SRC_FIG4,
                           note=note + "; context not stated, 1024 KV tokens per request assumed"))
    return out


def vllm_32374(rows: list[dict]) -> list[dict]:
    """The PR's profiled per-step ITL (a closed batch of B identical requests proposing K each), and the best K per
    batch that the cells themselves give with the PR's per-position acceptance (DERIVED)."""
    itl = {(int(r["rate_or_concurrency"].split("=")[1]), int(r["k"])): float(r["value"]) for r in rows
           if "#32374" in r["source"] and r["metric"] == "ITL"}
    rates = [float(r["value"]) for r in rows if "#32374" in r["source"] and r["metric"] == "acceptance_rate_per_pos"]
    out = [row(set="vllm32374_itl", target="llama3.1-8b", proposer="eagle" if k else "none", gpu="h100-sxm", tp=1,
               batch=b, k=k, context_tokens=PR32374_CONTEXT, metric="step_ms", value=v, unit="ms",
               source=PR32374_SOURCE, note=f"ITL of one step; context {PR32374_CONTEXT} KV tokens per request assumed "
                                           "(MT-Bench prompt ~128 with the chat template + half of outputs up to ~512)")
           for (b, k), v in sorted(itl.items())]
    ks = sorted({k for _, k in itl})
    for b in sorted({b for b, _ in itl}):
        best = max(ks, key=lambda k: (position_tokens(rates, k) / itl[(b, k)], -k))
        out.append(row(set="vllm32374_best_k", target="llama3.1-8b", proposer="eagle", gpu="h100-sxm", tp=1, batch=b,
                       k=max(ks), context_tokens=PR32374_CONTEXT, metric="best_k", value=best, unit="k",
                       source=PR32374_SOURCE, position_rates=";".join(f"{r:g}" for r in rates),
                       candidates=";".join(map(str, ks)),
                       note="DERIVED here: argmax over the measured K of (1 + sum of the first K per-position rates) / "
                            "measured ITL (the PR's goodput rule)"))
    return out


def vllm_12101(rows: list[dict]) -> list[dict]:
    r = {x["metric"]: float(x["value"]) for x in rows if "12101" in x["source"] and x["draft_method"] == "none"}
    tpot = (r["mean_e2e_latency_derived"] * 1e3 - r["mean_TTFT"]) / (258 - 1)
    return [row(set="vllm12101_70b_vanilla", target="llama3-70b", proposer="none", gpu="h100-sxm", tp=4, batch=1,
                k=0, context_tokens=1180, acceptance_length=1.0, metric="tpot_ms", value=round(tpot, 3), unit="ms",
                source="vLLM issue #12101, Llama-3.3-70B-Instruct TP4 on 4x H100, concurrency 1, input 1052 / "
                       "output 258 mean",
                note="DERIVED here: (mean e2e latency 4.933 s - mean TTFT 135.34 ms) / 257 output gaps; "
                     "Llama-3.3-70B has the llama3-70b shapes")]


def vllm_9298(rows: list[dict]) -> list[dict]:
    """V0 SpecDecodeWorker stage times (role parameter): what a V0 calibration takes its host costs from."""
    stage = {("batch expansion" in r["note"], r["metric"]): float(r["value"]) for r in rows if "#9298" in r["source"]}
    src = ("vLLM PR #9298 comment (2024-10-25): V0 SpecDecodeWorker stage times, v0.6.3.post2, Meta-Llama-3-8B + "
           "turboderp/Qwama-0.5B-Instruct draft, 1x A10, batch 16, k = 3")
    values = {"v0_pr9298_proposal_ms_per_token_graph": (stage[(True, "time_per_proposal_token")],
                                                        "batch-expansion run, CUDA graphs on (the default then)"),
              "v0_pr9298_proposal_ms_per_token_eager": (stage[(False, "time_per_proposal_token")],
                                                        "MQA run with --enforce-eager: the same proposer without graphs"),
              "v0_pr9298_verification_ms": (stage[(True, "verification_time")],
                                            "verification stage (rejection sampling and outputs) at batch 16")}
    return [row(set="vllm9298_v0_stages", target="*", proposer="*", gpu="a10", tp=1, batch=16, k=3, metric=m,
                value=v, unit="ms", source=src, note=note) for m, (v, note) in values.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="the collection's published_spec_decode.csv")
    p.add_argument("--out", default=str(DEFAULT_PUBLISHED), help="where the builder's CSV goes")
    args = p.parse_args(argv)
    try:
        with open(args.source, newline="") as fh:
            rows = list(csv.DictReader(fh))
        out = (vllm_20780(rows) + specdecode_bench(rows) + fig4(rows) + vllm_32374(rows) + vllm_12101(rows)
               + vllm_9298(rows))
    except (OSError, KeyError, ValueError, IndexError) as exc:
        print(f"extract_published_measurements: error: --source {args.source}: {exc}", file=sys.stderr)
        return 2
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(out)
    write_text_atomic(Path(args.out), buf.getvalue())
    print(f"wrote {len(out)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
