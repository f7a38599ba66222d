"""Records and output of `validate_published.py`: rows and checks, the rich table, CSV, JSON and the markdown block.

Kept apart from the computations so each file stays short; nothing here prices a step. A row is
one predicted-vs-measured figure; rows of one setting whose metrics differ only in a bracketed
part ('share [draft]', 'share [verify]') are printed on one line. Files are written atomically
(`specdec_sim.safe_output.write_text_atomic`: a temporary name, then a rename); `--markdown` rewrites
only the generated block of its file, between BEGIN and END, so hand-written text around it survives
a rerun.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from specdec_sim.safe_output import write_text_atomic


@dataclass(frozen=True)
class Row:
    """One predicted-vs-measured line of the report."""

    section: str
    setting: str
    calibration: str
    metric: str
    predicted: float | None  # None: nothing to predict (a crossover that never happens)
    measured: float | None
    unit: str
    error: float | None  # predicted - measured, in error_unit
    error_unit: str  # "%" (relative), "pp" (percentage points) or "" (absolute, in `unit`)
    note: str = ""


@dataclass(frozen=True)
class Check:
    """One done-when check (issues 9 and 20); an `informational` one reports a finding and never fails --check."""

    name: str
    passed: bool
    detail: str
    informational: bool = False

    @property
    def verdict(self) -> str:
        if self.passed:
            return "pass"
        return "finding" if self.informational else "FAIL"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    calibrations: dict = field(default_factory=dict)  # role -> {"name", "source", "wanted"}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "k":
        return f"{value:.0f}"
    digits = 1 if unit == "%" else 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
    return f"{value:.{digits}f}"


def _error_text(row: Row) -> str:
    if row.error is None:
        return "-"
    error = round(row.error, 1 if row.error_unit else 0) + 0.0  # + 0.0: no "-0.0"
    return f"{error:+.1f}" if row.error_unit else f"{error:+.0f}"


def _split(metric: str) -> tuple[str, str]:
    """'mean TPOT [closed]' -> ('mean TPOT', 'closed'); rows of one setting that differ only in the
    bracketed part are printed on one line."""
    base, sep, part = metric.partition(" [")
    return (base, part.rstrip("]")) if sep else (metric, "")


def _joined(cells: list[str]) -> str:
    return cells[0] if len(set(cells)) == 1 else " / ".join(cells)


def table_lines(report: Report) -> list[tuple[str, ...]]:
    """(section, setting, calibration, metric, predicted, measured, error, note) as text; rows of one setting
    and metric that differ only in a bracketed part ('share [draft]', 'share [verify]') share a line."""
    groups: list[list[Row]] = []
    for row in report.rows:
        last = groups[-1][0] if groups else None
        if (last is not None and _split(row.metric)[1] and (last.section, last.setting, last.calibration,
                                                           _split(last.metric)[0]) ==
                (row.section, row.setting, row.calibration, _split(row.metric)[0])):
            groups[-1].append(row)
        else:
            groups.append([row])
    lines = []
    for rows in groups:
        first, parts = rows[0], [_split(r.metric)[1] for r in rows]
        metric = _split(first.metric)[0] + (" " + " / ".join(parts) if parts[0] else "")
        unit = f" {first.unit}" if first.unit not in ("k", "") else ""
        err_unit = f" {first.error_unit}" if first.error_unit else ""
        lines.append((first.section, first.setting, first.calibration, metric,
                      " / ".join(_fmt(r.predicted, r.unit) for r in rows) + unit,
                      _joined([_fmt(r.measured, r.unit) for r in rows]) + (unit if first.measured is not None else ""),
                      _joined([_error_text(r) for r in rows]) + (err_unit if first.error is not None else ""),
                      "; ".join(dict.fromkeys(r.note for r in rows if r.note))))
    return lines


def print_report(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    table = Table(title="Predicted vs published measurements", show_lines=False)
    for name in ("setting", "calibration", "metric", "predicted", "measured", "error", "note"):
        table.add_column(name, overflow="fold")
    section = None
    for line in table_lines(report):
        if line[0] != section:
            section = line[0]
            table.add_row(f"[bold]{section}[/bold]", "", "", "", "", "", "")
        table.add_row(*line[1:])
    console.print(table)
    for role, c in report.calibrations.items():
        if _fallback(c):
            console.print(f"{role}: {c['name']} ({_fallback(c)})")
    checks = Table(title="Done-when checks (issues 9 and 20)")
    for name in ("check", "result", "detail"):
        checks.add_column(name, overflow="fold")
    for c in report.checks:
        colour = "green" if c.passed else "yellow" if c.informational else "red"
        checks.add_row(c.name, f"[{colour}]{c.verdict}[/{colour}]", c.detail)
    console.print(checks)
    console.print(summary_line(report))


def _fallback(calibration: dict) -> str:
    wanted = calibration.get("wanted", calibration["name"])
    return "" if wanted in (calibration["name"], "") else f"fallback: {wanted} not shipped"


def markdown(report: Report) -> str:
    """The generated block of docs/validation.md: calibrations, the table, the checks."""
    lines = ["| role | calibration | note |", "|---|---|---|"]
    lines += [f"| {role} | `{c['name']}` | {_fallback(c)} |" for role, c in report.calibrations.items()]
    section = None
    for line in table_lines(report):
        if line[0] != section:
            section = line[0]
            lines += ["", f"**{section}**", "",
                      "| setting | calibration | metric | predicted | measured | error | note |",
                      "|---|---|---|---|---|---|---|"]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in line[1:]) + " |")
    lines += ["", "| done-when check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else c.verdict if c.informational else '**FAIL**'} | {c.detail} |"
              for c in report.checks]
    return "\n".join(lines + ["", summary_line(report) + "."])


def summary_line(report: Report) -> str:
    """`N of M checks pass` (done-when checks), and the informational findings apart."""
    gates = [c for c in report.checks if not c.informational]
    found = [c for c in report.checks if c.informational and not c.passed]
    text = f"{sum(c.passed for c in gates)} of {len(gates)} checks pass"
    return text + (f"; {len(found)} informational finding{'s' if len(found) != 1 else ''}" if found else "")


BEGIN, END = "<!-- validate_published: begin (generated) -->", "<!-- validate_published: end -->"


def replace_block(existing: str, block: str) -> str:
    """`existing` with the text between BEGIN and END replaced by `block` (appended when there are no markers)."""
    generated = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in existing and END in existing:
        head, _, rest = existing.partition(BEGIN)
        return head + generated + rest.partition(END)[2]
    return (existing.rstrip() + "\n\n" if existing.strip() else "") + generated + "\n"


def rows_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f for f in Row.__dataclass_fields__], lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow(asdict(row))
    return buffer.getvalue()


def write_outputs(report: Report, out: Path | None, markdown_path: Path | None, options: dict) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "validation.csv", rows_csv(report))
        payload = {"options": options, "calibrations": report.calibrations,
                   "checks": [asdict(c) for c in report.checks], "rows": [asdict(r) for r in report.rows]}
        write_text_atomic(out / "validation.json", json.dumps(payload, indent=1) + "\n")
    if markdown_path is not None:
        existing = markdown_path.read_text(encoding="utf-8") if markdown_path.exists() else ""
        write_text_atomic(markdown_path, replace_block(existing, markdown(report)))
