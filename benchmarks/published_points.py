"""The project's copy of the published figures (`data/published_points.csv`, sources in `data/SOURCE.md`).

`load_points` reads it into {(setting, metric): value}, refusing a bad header or value in one line
naming the file, line and column; `point` looks one figure up. Used by `validate_published.py`.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "published_points.csv"
COLUMNS = ("setting", "source", "metric", "value", "unit", "note")


class ValidationError(ValueError):
    """A bad option or data file: one line, exit 2."""


def load_points(path: Path = DATA) -> dict[tuple[str, str], float]:
    """{(setting, metric): value} from the project copy of the published figures."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"{path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValidationError(f"{path}: header must be {','.join(COLUMNS)}")
    points: dict[tuple[str, str], float] = {}
    for line, row in enumerate(reader, start=2):
        try:
            value = float(row["value"])
        except (TypeError, ValueError):
            raise ValidationError(f"{path}: line {line}, column value: {row['value']!r} is not a number") from None
        if not math.isfinite(value) or not row["source"]:
            raise ValidationError(f"{path}: line {line}: value must be finite and source non-empty")
        points[(row["setting"], row["metric"])] = value
    return points


def point(points: dict, setting: str, metric: str) -> float:
    if (setting, metric) not in points:
        raise ValidationError(f"{DATA.name}: no row for setting {setting!r}, metric {metric!r}")
    return points[(setting, metric)]
