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

from specdec_sim.safe_output import write_text_atomic
from specdec_sim.profiler.published import COLUMNS, DEFAULT_PUBLISHED
from specdec_sim.acceptance.rates import alpha_from_acceptance_length

ROLES = {"sdb_fit_coefficients": "parameter", "sdb_fit_steps": "check", "vllm32374_best_k": "check"}
SRC_20780 = "vLLM issue #20780 (ekagra-ranjan, 2025-07-10), vLLM V1 ~v0.9, H100 inferred, MT-Bench, batch 1"
SRC_SDB = ("SpecDecode-Bench simulator/predictor.py class Llama8BH100 (github.com/SpecDecode-Bench/simulator), "
           "vLLM v0.10.1, 1x H100")
SRC_FIG4 = "SpecDecode-Bench paper arXiv 2601.11580 Fig.4 (execution-time breakdown), vLLM v0.10.1, H100"
FIG4_PROPOSERS = {"Baseline (no SD)": "none", "N-gram": "ngram", "Eagle": "eagle", "Eagle3": "eagle3",
                  "Draft-model": "draft:llama3.2-1b"}
BEST_K_32374 = ((1, 3), (2, 3), (4, 3), (8, 3), (16, 3), (64, 2), (128, 2), (256, 0))


def row(**kw) -> dict:
    out = {c: kw.get(c, "") for c in COLUMNS}
    out["role"] = ROLES.get(out["set"], "fit")
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
        common = dict(target="llama3.1-8b", gpu="h100-sxm", tp=1, batch=1, k=k, context_tokens=256,
                      metric="tpot_ms", value=r["value"], unit="ms", source=SRC_20780)
        if k == 0:
            out.append(row(set="vllm20780_vanilla", proposer="none", acceptance_length=1.0, **common,
                           note="vanilla TPOT at batch 1; context 256 assumed (MT-Bench prompts are short)"))
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
            out.append(row(set="sdb_fit_steps", target="llama3.1-8b", proposer="eagle" if spec else "none",
                           gpu="h100-sxm", tp=1, batch=int(r["rate_or_concurrency"].split("=")[1]),
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


def best_k_32374() -> list[dict]:
    alpha = alpha_from_acceptance_length(2.29, 3)
    return [row(set="vllm32374_best_k", target="llama3.1-8b", proposer="eagle", gpu="h100-sxm", tp=1, batch=b, k=7,
                context_tokens=512, acceptance_length=2.29, metric="best_k", value=k, unit="k",
                source="vLLM PR #32374 (dynamic speculative decoding): best k found for EAGLE on Llama-3.1-8B",
                note="k column = largest k searched; acceptance from #20780 EAGLE-1 AL 2.29 at k=3 "
                     f"(alpha {alpha:.4f}); context 512 assumed") for b, k in BEST_K_32374]


def vllm_12101(rows: list[dict]) -> list[dict]:
    r = {x["metric"]: float(x["value"]) for x in rows if "12101" in x["source"] and x["draft_method"] == "none"}
    tpot = (r["mean_e2e_latency_derived"] * 1e3 - r["mean_TTFT"]) / (258 - 1)
    return [row(set="vllm12101_70b_vanilla", target="llama3-70b", proposer="none", gpu="h100-sxm", tp=4, batch=1,
                k=0, context_tokens=1180, acceptance_length=1.0, metric="tpot_ms", value=round(tpot, 3), unit="ms",
                source="vLLM issue #12101, Llama-3.3-70B-Instruct TP4 on 4x H100, concurrency 1, input 1052 / "
                       "output 258 mean",
                note="DERIVED here: (mean e2e latency 4.933 s - mean TTFT 135.34 ms) / 257 output gaps; "
                     "Llama-3.3-70B has the llama3-70b shapes")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="the collection's published_spec_decode.csv")
    p.add_argument("--out", default=str(DEFAULT_PUBLISHED), help="where the builder's CSV goes")
    args = p.parse_args(argv)
    try:
        with open(args.source, newline="") as fh:
            rows = list(csv.DictReader(fh))
        out = vllm_20780(rows) + specdecode_bench(rows) + fig4(rows) + best_k_32374() + vllm_12101(rows)
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
