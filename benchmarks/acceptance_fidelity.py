"""How much the acceptance model moves predicted speedups: pooled per-position rates vs a fitted profile vs exact replay.

    python benchmarks/acceptance_fidelity.py --data ../shared/data/acceptance/specdecode_bench
    python benchmarks/acceptance_fidelity.py --data DIR --batches 1,16 --datasets gsm8k --seeds 2

For each SpecDecode-Bench file (`<dataset>.<proposer>.jsonl.gz`, given by path, never copied) the
requests are the records' own lengths, all arriving at once, run as a closed batch of B
(`--max-num-seqs B`: B in flight, the next starts when one finishes) with the default calibration.
Speedup of `fixed:3` over no speculation, two ways: mean TPOT (every request's decode speed weighs
alike) and the batch's duration (at large B decided by its longest request: on ShareGPT and
InstructCoder a handful of 8,192-token outputs run alone at the end, so one request's acceptance
sets it and no per-request model can predict which), under three acceptance models:

* pooled: one set of per-position conditional rates for the whole file, what a vLLM run's
  `spec_decode_per_position_acceptance_rates` gives (from the exact replay at k = 3); for n-gram,
  the pooled chance a step finds a match (`--ngram-match`) and the rates given a match;
* profile: the fitted profile (acceptance/profile.py, the shipped preset's fit), each
  request its own sampled process; mean over `--seeds` seeds (the spread is printed);
* replay: every request replays its own record exactly (`--acceptance-trace`, `acceptance_id`).

Writes one CSV row per (file, B) as it goes (`--csv`, default docs/acceptance-fidelity.csv; a rerun
skips rows already there, so an interrupted run resumes) and a figure (`--figure`).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.acceptance.records import load_acceptance_trace
from specdec_sim.acceptance.spans import replay_steps
from specdec_sim.acceptance.fit import fit_profile
from specdec_sim.acceptance.profile import save_profile
from specdec_sim.traces.model import Trace

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("gsm8k", "cnn", "sharegpt", "instructcoder")
PROPOSERS = ("eagle", "ngram")
METRICS = ("tpot", "makespan")
FIELDS = ("dataset", "proposer", "batch", *(f"{m}_{c}" for m in METRICS for c in (
    "speedup_replay", "speedup_profile", "speedup_profile_sd", "speedup_pooled", "profile_vs_replay_pct",
    "pooled_vs_replay_pct")), "duration_none_s")


def request_trace(records) -> Trace:
    n = len(records)
    return Trace(np.arange(n), np.zeros(n), [r.prompt_tokens for r in records], [r.output_tokens for r in records],
                 "acceptance records", [r.id for r in records])


def pooled_rates(records, k: int = 3, given_match: bool = False) -> tuple[float, tuple[float, ...]]:
    """(match probability, conditional rates given a match) pooled over every step of a k-replay.

    For draft models the match probability is 1 and the rates are vLLM's per-position rates made
    conditional; for n-gram a span of 1 counts as no match (as the profile and the replay do)."""
    steps, matched = 0, 0
    trials, wins = np.zeros(k), np.zeros(k)
    for rec in records:
        spans, n = rec.spans, rec.output_tokens
        generated = 1
        for e in replay_steps(spans, k):
            left = n - generated
            k_eff = min(k, left - 1)
            accepted = min(int(spans[generated - 1]) - 1, k_eff)
            steps += 1
            matched += accepted >= 1
            if given_match and accepted < 1:
                generated += e
                continue
            for j in range(k_eff):
                if accepted < j:
                    break
                trials[j] += 1
                wins[j] += accepted > j
            generated += e
    rates = wins / np.maximum(trials, 1)
    return matched / max(steps, 1), tuple(float(r) for r in rates)


def timings(trace: Trace, config: SimConfig, policy: str, seed: int = 0) -> np.ndarray:
    """(mean TPOT in ms, duration in s) of one run: the two things a speedup is taken of."""
    result = run_simulation(trace, config, policy, seed=seed)
    if result.summary["failed"]:
        raise RuntimeError(f"{result.summary['failed']} requests failed under {policy}")
    return np.array([float(result.summary["mean_tpot_ms"]), float(result.summary["duration"])])


def base_config(records, batch: int, style: str, **extra) -> SimConfig:
    budget = max(8192, max(r.prompt_tokens for r in records) + 1)
    return SimConfig(max_num_seqs=batch, max_num_batched_tokens=budget, style=style, record_steps=False, **extra)


def one_row(data: Path, dataset: str, proposer: str, batch: int, seeds: int, profile_dir: Path) -> dict:
    path = data / f"{dataset}.{proposer}.jsonl.gz"
    records = load_acceptance_trace(path)
    trace = request_trace(records)
    style = "ngram" if proposer == "ngram" else "draft"
    profile_path = profile_dir / f"{dataset}-{proposer}.json"
    if not profile_path.is_file():
        save_profile(fit_profile(records, f"{dataset}-{proposer}", proposer), profile_path)
    none = timings(trace, base_config(records, batch, style), "none")
    replay = none / timings(trace, base_config(records, batch, style, acceptance_trace=str(path)), "fixed:3")
    profile = np.array([none / timings(trace, base_config(records, batch, style, acceptance_profile=str(profile_path)),
                                       "fixed:3", seed) for seed in range(seeds)])
    match, rates = pooled_rates(records, given_match=style == "ngram")
    pooled_cfg = base_config(records, batch, style, acceptance_mode="per-position", position_rates=rates,
                             ngram_match_prob=match if style == "ngram" else 0.9)
    pooled = none / timings(trace, pooled_cfg, "fixed:3")
    row = {"dataset": dataset, "proposer": proposer, "batch": batch, "duration_none_s": round(float(none[1]), 3)}
    for i, metric in enumerate(METRICS):
        mean = float(profile[:, i].mean())
        row.update({f"{metric}_speedup_replay": round(float(replay[i]), 4),
                    f"{metric}_speedup_profile": round(mean, 4),
                    f"{metric}_speedup_profile_sd": round(float(profile[:, i].std()), 4),
                    f"{metric}_speedup_pooled": round(float(pooled[i]), 4),
                    f"{metric}_profile_vs_replay_pct": round((mean / replay[i] - 1) * 100, 2),
                    f"{metric}_pooled_vs_replay_pct": round((pooled[i] / replay[i] - 1) * 100, 2)})
    return row


def done_rows(path: Path) -> dict[tuple, dict]:
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {(r["dataset"], r["proposer"], int(r["batch"])): r for r in csv.DictReader(handle)}


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def print_table(rows: list[dict], metric: str) -> None:
    title = {"tpot": "speedup of mean TPOT (per-request decode speed; every request weighs alike)",
             "makespan": "speedup of the batch's duration (decided by its longest request at large B)"}[metric]
    print(f"\n{title}")
    print(f"{'file':22s} {'B':>4s} {'replay':>7s} {'profile':>8s} {'(sd)':>6s} {'pooled':>7s} "
          f"{'profile%':>9s} {'pooled%':>8s}")
    get = lambda r, c: float(r[f"{metric}_{c}"])  # noqa: E731
    for r in rows:
        print(f"{r['dataset'] + '.' + r['proposer']:22s} {int(r['batch']):4d} {get(r, 'speedup_replay'):7.3f} "
              f"{get(r, 'speedup_profile'):8.3f} {get(r, 'speedup_profile_sd'):6.3f} "
              f"{get(r, 'speedup_pooled'):7.3f} {get(r, 'profile_vs_replay_pct'):+9.2f} "
              f"{get(r, 'pooled_vs_replay_pct'):+8.2f}")
    prof = [abs(get(r, "profile_vs_replay_pct")) for r in rows]
    pool = [abs(get(r, "pooled_vs_replay_pct")) for r in rows]
    if rows:
        print(f"max |profile - replay| {max(prof):.2f} %, mean {np.mean(prof):.2f} %;  "
              f"max |pooled - replay| {max(pool):.2f} %, mean {np.mean(pool):.2f} %")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted({(r["dataset"], r["proposer"]) for r in rows}, key=lambda f: (f[1], DATASETS.index(f[0])))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, proposer in zip(axes, PROPOSERS):
        for dataset, prop in files:
            if prop != proposer:
                continue
            mine = sorted((r for r in rows if r["dataset"] == dataset and r["proposer"] == prop),
                          key=lambda r: int(r["batch"]))
            b = [int(r["batch"]) for r in mine]
            line, = ax.plot(b, [float(r["tpot_speedup_replay"]) for r in mine], "-o", ms=4,
                            label=f"{dataset} replay")
            ax.plot(b, [float(r["tpot_speedup_profile"]) for r in mine], "--s", ms=4, color=line.get_color(),
                    label=f"{dataset} profile")
            ax.plot(b, [float(r["tpot_speedup_pooled"]) for r in mine], ":^", ms=4, color=line.get_color(),
                    alpha=0.7, label=f"{dataset} pooled")
        ax.set_xscale("log", base=2)
        ax.set(title=f"{proposer}: fixed k=3 vs no speculation (mean TPOT)", xlabel="closed batch B")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.legend(fontsize=6, ncol=2)
    axes[0].set_ylabel("predicted speedup")
    fig.suptitle("solid: exact replay, dashed: fitted profile, dotted: pooled per-position rates", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the SpecDecode-Bench span files")
    parser.add_argument("--batches", default="1,16,64,128", help="closed batch sizes B (comma-separated)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--proposers", default=",".join(PROPOSERS))
    parser.add_argument("--seeds", type=int, default=6, help="profile runs per row (their mean is compared)")
    parser.add_argument("--profiles", type=Path, default=ROOT / "acceptance" / "profiles",
                        help="fitted profiles <dataset>-<proposer>.json (fitted from --data if missing)")
    parser.add_argument("--csv", type=Path, default=ROOT / "docs" / "acceptance-fidelity.csv")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "acceptance-fidelity.png")
    args = parser.parse_args(argv)
    from rich.progress import Progress

    batches = [int(b) for b in args.batches.split(",")]
    jobs = [(d, p, b) for d in args.datasets.split(",") for p in args.proposers.split(",") for b in batches]
    done = done_rows(args.csv)
    with Progress(transient=True) as progress:
        task = progress.add_task("simulating", total=len(jobs))
        for dataset, proposer, batch in jobs:
            if (dataset, proposer, batch) not in done:
                row = one_row(args.data, dataset, proposer, batch, args.seeds, args.profiles)
                append_row(args.csv, row)
                done[(dataset, proposer, batch)] = row
            progress.advance(task)
    rows = [done[j] for j in jobs]
    for metric in METRICS:
        print_table(rows, metric)
    plot(rows, args.figure)
    print(f"wrote {args.csv} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
