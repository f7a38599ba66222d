"""JSON resources found by name or path: shipped calibrations here, bundled model configs in the profiler.

`find_named_json` resolves a name to a shipped file (`DIR/NAME.json`) or takes a path (a file, or a
directory holding `directory_file`); `read_json` parses it. Both raise the caller's error type with
one line that names the file or lists the shipped names.
"""
from __future__ import annotations

import json
from pathlib import Path


def find_named_json(name_or_path: str | Path, directory: Path, what: str, error: type[Exception],
                    directory_file: str | None = None) -> Path:
    """The file `name_or_path` means: an existing file, a directory's `directory_file`, or `directory/NAME.json`."""
    path = Path(name_or_path)
    if directory_file and path.is_dir():
        inner = path / directory_file
        if not inner.is_file():
            raise error(f"{path}: directory has no {directory_file}")
        return inner
    if path.is_file():
        return path
    shipped = directory / f"{name_or_path}.json"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in directory.glob("*.json")))
    where = f"a directory with {directory_file}" if directory_file else "a file path"
    raise error(f"unknown {what} {str(name_or_path)!r}: give {where} or one of {names}")


def read_json(path: Path, error: type[Exception]) -> dict:
    """The parsed JSON object in `path`, or `error` naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: not a JSON object")
    return data


__all__ = ["find_named_json", "read_json"]
