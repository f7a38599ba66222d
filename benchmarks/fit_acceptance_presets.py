"""Fit the shipped acceptance profiles from the SpecDecode-Bench span files (given by path; never copied).

    python benchmarks/fit_acceptance_presets.py --data ../shared/data/acceptance/specdecode_bench
    python benchmarks/fit_acceptance_presets.py --data DIR --out acceptance/profiles --check

Reads `{gsm8k,cnn,sharegpt,instructcoder}.{eagle,ngram}.jsonl.gz` from --data and writes one
profile per file, `<dataset>-<proposer>.json`, into --out (default: the package's
acceptance/profiles). A profile holds only derived statistics (quantiles, rates,
transition probabilities, the fit summary), with the attribution the source requires; no
request's span sequence is written. `--check` refits and compares with the files in --out
(exit 1 on a difference), so the shipped presets stay what this script makes.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from specdec_sim.acceptance.records import AcceptanceTraceError, load_acceptance_trace
from specdec_sim.acceptance.fit import fit_profile
from specdec_sim.acceptance.profile import save_profile

DATASETS = ("gsm8k", "cnn", "sharegpt", "instructcoder")
PROPOSERS = {"eagle": "EAGLE head", "ngram": "n-gram prompt lookup"}
DATASET_NAMES = {"gsm8k": "GSM8K", "cnn": "CNN/DailyMail", "sharegpt": "ShareGPT", "instructcoder": "InstructCoder"}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "acceptance" / "profiles"
SOURCE = {
    "dataset": "SpecDecode-Bench per-position acceptance (GitHub SpecDecode-Bench/simulator, "
               "data/llama3.1-8B/combined_*.jsonl, commit 2fdccbd, 2026-04-01)",
    "paper": "Liu, Yu, Park, Stoica, Cheung: Speculative Decoding: Performance or Illusion? arXiv 2601.11580",
    "measured": "Llama-3.1-8B-Instruct, greedy decoding, H100; EAGLE head and n-gram prompt lookup",
    "license": "the repository states no license; only derived statistics are shipped here (quantiles, rates, "
               "transition probabilities; for length strata under 20 requests their fitted 5-number parameter "
               "vectors and whether their long runs copy to the end of the output), never per-request sequences",
    "fitted_by": "benchmarks/fit_acceptance_presets.py",
}


def profile_for(data: Path, dataset: str, proposer: str):
    path = data / f"{dataset}.{proposer}.jsonl.gz"
    records = load_acceptance_trace(path)
    description = (f"Llama-3.1-8B-Instruct + {PROPOSERS[proposer]} on {DATASET_NAMES[dataset]} "
                   f"({len(records)} requests, SpecDecode-Bench, H100, greedy)")
    return fit_profile(records, f"{dataset}-{proposer}", proposer, description,
                       {**SOURCE, "file": path.name})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the SpecDecode-Bench span files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the profile JSON files go")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = parser.parse_args(argv)
    differing = []
    for dataset in DATASETS:
        for proposer in PROPOSERS:
            try:
                profile = profile_for(args.data, dataset, proposer)
            except AcceptanceTraceError as exc:
                print(f"fit_acceptance_presets: {exc}", file=sys.stderr)
                return 2
            target = args.out / f"{profile.name}.json"
            if args.check:
                fresh = json.loads(json.dumps(asdict(profile)))
                if not target.is_file() or json.loads(target.read_text()) != fresh:
                    differing.append(profile.name)
                continue
            save_profile(profile, target)
            s = profile.summary
            al3 = s["replay_acceptance_length"]["k3"]["acceptance_length_token_weighted"]
            print(f"{profile.name:22s} requests {s['requests']:4d}  AL@3 replay {al3:.3f}  "
                  f"alpha median {s['per_request_alpha_quantiles']['p50']:.3f}  "
                  f"Beta KS {s['per_request_alpha_beta_fit']['ks']}  -> {target}")
    if args.check:
        print("\n".join(differing) or "all profiles match")
        return 1 if differing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
