"""`fit-acceptance`: fit an acceptance profile (acceptance/profile.py) from an acceptance trace.

    fit-acceptance spans.jsonl.gz --out my-profile.json
    fit-acceptance spans.parquet --spans-field ngram_spans --name code-ngram --out code-ngram.json
    simulate --trace sharegpt --acceptance-profile my-profile.json --policy fixed:3

Prints the fit's summary numbers (requests, replayed acceptance length at k = 1, 3, 5, 7, the
spread of per-request acceptance, the match process). Bad input: one line, exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import specdec_sim
from specdec_sim.acceptance.records import AcceptanceTraceError, load_acceptance_trace
from specdec_sim.cli_support import OneLineParser, fail
from specdec_sim.acceptance.fit import fit_profile
from specdec_sim.acceptance.profile import ProfileError, save_profile


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fit-acceptance", description=__doc__.split("\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {specdec_sim.__version__}")
    parser.add_argument("trace", type=Path, help="acceptance trace (JSONL, JSONL.gz or Parquet; "
                                                 "docs/acceptance-traces.md)")
    parser.add_argument("--spans-field", default="spans", help="which span list to fit (default: spans)")
    parser.add_argument("--out", type=Path, required=True, help="profile JSON to write (atomically)")
    parser.add_argument("--name", help="profile name (default: the --out file name without .json)")
    parser.add_argument("--proposer", default="", help="proposer label stored in the profile (e.g. eagle, ngram)")
    parser.add_argument("--description", default="", help="free text stored in the profile")
    return parser


def summary_lines(profile) -> list[str]:
    s = profile.summary
    al = s["replay_acceptance_length"]
    q = s["per_request_alpha_quantiles"]
    beta = s["per_request_alpha_beta_fit"]
    return [f"profile {profile.name}: {s['requests']} requests, {s['output_tokens_total']} output tokens "
            f"(max {s['output_tokens_max']}), {len(profile.strata)} length strata",
            "replayed acceptance length (token-weighted): " + ", ".join(
                f"k={k[1:]} {v['acceptance_length_token_weighted']:.3f}" for k, v in al.items()),
            f"per-request alpha: p5 {q['p5']:.3f}  p25 {q['p25']:.3f}  p50 {q['p50']:.3f}  p75 {q['p75']:.3f}  "
            f"p95 {q['p95']:.3f}  (moment Beta a={beta['a']} b={beta['b']}, KS {beta['ks']})",
            f"match process: P(match | no match) {s['pooled_match_transitions']['p01']:.3f}, "
            f"P(match | match) {s['pooled_match_transitions']['p11']:.3f}, mean span given a match "
            f"{s['mean_span_given_match_pooled']}"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = args.name or args.out.name.removesuffix(".json")
    try:
        records = load_acceptance_trace(args.trace, args.spans_field)
        profile = fit_profile(records, name, args.proposer, args.description,
                              {"fitted_from": args.trace.name, "spans_field": args.spans_field,
                               "fitted_by": "fit-acceptance"})
        save_profile(profile, args.out)
    except (AcceptanceTraceError, ProfileError) as exc:
        return fail("fit-acceptance", exc)
    except OSError as exc:
        return fail("fit-acceptance", f"--out {args.out}: cannot write there ({exc.strerror or exc})")
    print("\n".join(summary_lines(profile)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
