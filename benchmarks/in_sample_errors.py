"""In-sample error of every shipped calibration against the measured sets it was fitted to, and a ceiling for CI.

Each shipped calibration built by `build-calibration` stores its error against every published set it was fitted
to or checked against (`fit_error`) and the setting its points were selected by (`provenance.setting`). This
script recomputes those errors with the current cost model from the bundled copy of the measurements
(`profiler/data/published_measurements.csv`) and compares them with `benchmarks/data/in_sample_ceiling.json`:

    python benchmarks/in_sample_errors.py            # table; exit 1 when an error rose above its ceiling
    python benchmarks/in_sample_errors.py --write    # after an intended change: new ceilings (commit with reason)

`tests/test_in_sample_errors.py` runs the same check in CI, and also that each stored `fit_error` is what the
current code computes (a cost-model change without rebuilt calibrations fails). V0 calibrations are left out:
their fit errors are those of the V1 fit they were derived from (their own check is validate_v0.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from specdec_sim.costmodel import Calibration, available_calibrations, load_calibration
from specdec_sim.profiler.published import group_sets, read_published, select
from specdec_sim.profiler.roofline_serving import set_error

CEILING = Path(__file__).resolve().parent / "data" / "in_sample_ceiling.json"
SLACK = 0.05  # ceilings are written this much above the errors (absolute, in each set's unit): rounding, not fit


def measured_sets(cal: Calibration, measures) -> dict[str, list]:
    """The published sets of the calibration's setting, by name, as the builder selected them."""
    s = cal.provenance["setting"]
    return group_sets(select(measures, s["target"], s["proposer"], s["gpu"], int(s["tp"])))


def in_sample(cal: Calibration, measures) -> dict[str, dict]:
    """set name -> {"stored": fit_error's mape_pct, "now": recomputed mape_pct} for the sets of role `fit`."""
    sets = measured_sets(cal, measures)
    out = {}
    for name, entry in (cal.fit_error or {}).items():
        if entry.get("role") == "fit" and name in sets:
            out[name] = {"stored": float(entry["mape_pct"]), "now": float(set_error(cal, sets[name])["mape_pct"])}
    return out


def checked_calibrations() -> list[Calibration]:
    """Shipped calibrations built by build-calibration (provenance.setting) for vLLM V1."""
    cals = [load_calibration(name) for name in available_calibrations()]
    return [c for c in cals if isinstance(c.provenance, dict) and "setting" in c.provenance and c.engine == "v1"]


def all_errors(measures=None) -> dict[str, dict[str, dict]]:
    measures = measures if measures is not None else read_published()
    return {cal.name: in_sample(cal, measures) for cal in checked_calibrations()}


def regressions(errors: dict, ceiling: dict) -> list[str]:
    """One line per set whose recomputed error is above its ceiling, or that has no ceiling."""
    out = []
    for cal, sets in errors.items():
        for name, e in sets.items():
            top = ceiling.get(cal, {}).get(name)
            if top is None:
                out.append(f"{cal} {name}: no ceiling in {CEILING.name} (run --write)")
            elif e["now"] > top:
                out.append(f"{cal} {name}: in-sample error {e['now']:.3f} above its ceiling {top:.3f}")
    return out


def ceilings(errors: dict) -> dict:
    return {cal: {name: round(e["now"] + SLACK, 3) for name, e in sorted(sets.items())}
            for cal, sets in sorted(errors.items())}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help=f"write {CEILING.name} from the current errors")
    args = p.parse_args(argv)
    errors = all_errors()
    for cal, sets in errors.items():
        print(cal + ": " + ", ".join(f"{n} {e['now']:.2f}" for n, e in sets.items()))
    if args.write:
        CEILING.write_text(json.dumps(ceilings(errors), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {CEILING}")
        return 0
    bad = regressions(errors, json.loads(CEILING.read_text(encoding="utf-8")))
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
