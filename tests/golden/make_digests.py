"""Write (or check) the digests of simulate's output files for a fixed matrix of runs.

    python tests/golden/make_digests.py            # rewrite tests/golden/digests.json
    python tests/golden/make_digests.py --check    # compare against it (what tests/test_golden.py does)

Each case runs `simulate` in-process on a bundled trace; the digest of a policy's output is the
SHA-256 of its summary.json (without the entries that differ between identical runs: date,
command, absolute paths; `report.stable_summary`), of requests.csv's bytes and of steps.parquet's
values (read back and written as CSV, so the digest does not depend on Parquet metadata).
A change that is meant to alter outputs regenerates the file in the same commit and says why.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

DIGESTS = Path(__file__).with_name("digests.json")
POLICIES = ["none", "fixed:3", "vllm-disable:k=3,threshold=16", "vllm-table:table=1-4:5;5-16:3;17-1024:0",
            "smartspec", "turbospec", "turbospec:per_request=1", "goodput-greedy", "oracle"]
FEW = ["fixed:3", "smartspec", "goodput-greedy"]
# the 300-request trace called `sharegpt` until 2026-12-01: keeps the digests of the pre-restructure commit
OLD_SHAREGPT = "sharegpt-300-long-outputs"
CASES: dict[str, tuple[list[str], list[str]]] = {
    **{trace: (["--trace", trace, "--max-requests", "150"], POLICIES)
       for trace in ("azure-conv", "azure-code", "mooncake-conv", "sharegpt-300-long-outputs", "arxiv-lengths")},
    "sharegpt": (["--trace", "sharegpt", "--max-requests", "150"], FEW),
    "ngram": (["--trace", OLD_SHAREGPT, "--max-requests", "100", "--style", "ngram", "--acceptance",
               "code-edit-ngram"], POLICIES),
    "tree": (["--trace", OLD_SHAREGPT, "--max-requests", "100", "--style", "tree"], FEW),
    "chunked": (["--trace", "mooncake-conv", "--max-requests", "120", "--chunked-prefill"], FEW),
    "spec-in-prefill": (["--trace", "mooncake-conv", "--max-requests", "120", "--chunked-prefill",
                         "--spec-in-prefill"], POLICIES),
    "replicas": (["--trace", "azure-conv", "--max-requests", "300", "--replicas", "3", "--router", "least-tokens",
                  "--time-scale", "0.3"], FEW),
    "random-router": (["--trace", "azure-code", "--max-requests", "200", "--replicas", "2", "--router", "random",
                       "--time-scale", "0.2", "--acceptance-spread", "2"], FEW),
    "batch-acceptance": (["--trace", OLD_SHAREGPT, "--max-requests", "100", "--acceptance-mode", "batch",
                          "--acceptance", "0.5", "--slo", "ttft:200,tpot:50"], FEW),
    "per-position": (["--trace", OLD_SHAREGPT, "--max-requests", "100", "--acceptance-mode", "per-position"], FEW),
    "preemption": (["--trace", OLD_SHAREGPT, "--kv-blocks", "300", "--rate", "20", "--num-requests", "150"], FEW),
    "ngram-70b": (["--trace", "azure-code", "--max-requests", "150", "--style", "ngram", "--calibration",
                   "llama3-70b-tp4-ngram-h100"], FEW),
}


# The legacy engine, pinned: the TurboSpec authors' fits priced exactly (policies see the truth). Their
# requests/steps digests equal those of the pre-restructure commit 86948c2 (a check that the newer terms
# of the cost model change nothing for files that do not use them).
ENGINE_V0 = {"--engine": "v0", "--kv-watermark": "0", "--oracle-lengths": None}  # the V0 engine as it was
LEGACY = {"--calibration": "turbospec-llama3-8b-eagle-h100", "--policy-calibration": "same", **ENGINE_V0}
LEGACY_70B = {"--calibration": "turbospec-llama3-70b-tp4-ngram-h100", "--policy-calibration": "same", **ENGINE_V0}
for _case, (_args, _) in CASES.items():
    _pins = LEGACY_70B if "llama3-70b-tp4-ngram-h100" in _args else LEGACY
    if "--calibration" in _args:
        del _args[_args.index("--calibration"):_args.index("--calibration") + 2]
    for _flag, _value in _pins.items():
        _args += [_flag] if _value is None else [_flag, _value]


# The engine as it runs by default (vLLM V1, the measured roofline calibration, policies pricing with their
# fitted view, max_tokens instead of true lengths), and its new modes.
CASES.update({
    "v1-default": (["--trace", "azure-conv", "--max-requests", "150"], POLICIES),
    "v1-prefix-cache": (["--trace", "mooncake-conv", "--max-requests", "120"], FEW),
    "v1-closed-loop": (["--trace", "sharegpt", "--max-requests", "80", "--max-concurrency", "4"], FEW),
    "v1-ngram": (["--trace", "azure-code", "--max-requests", "150", "--style", "ngram", "--calibration",
                  "llama3.1-8b-ngram-h100", "--acceptance", "code-edit-ngram"], FEW),
    "v1-70b-noise": (["--trace", "azure-conv", "--max-requests", "150", "--calibration", "llama3-70b-tp4-eagle-h100",
                      "--step-time-noise", "0.1", "--max-tokens", "400"], FEW),
})


def file_digests(run_dir: Path) -> dict[str, str]:
    from specdec_sim.simulator.report import stable_summary

    summary = stable_summary(json.loads((run_dir / "summary.json").read_text()))
    out = {"summary.json": hashlib.sha256(json.dumps(summary, indent=1, sort_keys=True).encode()).hexdigest(),
           "requests.csv": hashlib.sha256((run_dir / "requests.csv").read_bytes()).hexdigest()}
    steps = pd.read_parquet(run_dir / "steps.parquet")
    out["steps"] = hashlib.sha256(steps.to_csv(index=False, float_format="%.17g").encode()).hexdigest()
    return out


def compute(main) -> dict[str, dict[str, dict[str, str]]]:
    """{case: {policy dir: {file: sha256}}} with `main` the simulate CLI's main function."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (args, policies) in CASES.items():
            out = Path(tmp) / case
            argv = args + [arg for p in policies for arg in ("--policy", p)] + ["--quiet", "--out", str(out)]
            code = main(argv)
            if code != 0:
                raise RuntimeError(f"case {case}: simulate exited {code}")
            result[case] = {d.name: file_digests(d) for d in sorted(out.iterdir()) if d.is_dir()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with digests.json instead of writing it")
    parser.add_argument("--out", type=Path, default=DIGESTS, help="where to write the digests")
    args = parser.parse_args()
    import contextlib
    import io

    from specdec_sim.simulator.cli import main as simulate
    with contextlib.redirect_stdout(io.StringIO()):
        digests = compute(simulate)
    if args.check:
        expected = json.loads(DIGESTS.read_text())
        bad = [f"{c}/{p}" for c in expected for p in expected[c] if digests.get(c, {}).get(p) != expected[c][p]]
        print("\n".join(bad) or "all digests match")
        return 1 if bad else 0
    args.out.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
