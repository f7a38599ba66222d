"""Command-line options derived from config dataclasses: one source of truth for names, defaults, help.

A config field declares its option with `option(default, help, ...)` (flag, unit, choices, a
parser for the text); `add_options` adds one argparse argument per declared field, and
`from_namespace` builds the dataclass back from the parsed arguments. `simulate` and `sweep`
both build their engine options this way, so the same thing has the same name in both.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields
from typing import Any, Callable


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None, unit: str | None = None,
           choices: tuple[str, ...] | None = None, parse: Callable[[str], Any] | None = None,
           metavar: str | None = None, group: str = "serving", default_factory: Any = MISSING,
           invert: bool = False) -> Any:
    """A dataclass field with its command-line option. `invert=True` on a bool field that defaults
    to True makes `flag` switch it off (`--no-step-log`)."""
    meta = {"cli": {"help": help, "flag": flag, "unit": unit, "choices": choices, "parse": parse,
                    "metavar": metavar, "group": group, "invert": invert}}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: Field) -> str:
    """The option string of a config field (`max_num_seqs` -> `--max-num-seqs` unless declared)."""
    return f.metadata["cli"]["flag"] or "--" + f.name.replace("_", "-")


def option_fields(cls: type) -> list[Field]:
    return [f for f in fields(cls) if "cli" in f.metadata]


def _default_of(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _checked(parse: Callable[[str], Any], flag: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (TypeError, ValueError) as exc:
            message = str(exc) or f"bad value {text!r}"
            raise argparse.ArgumentTypeError(message.removeprefix(f"{flag}: ")) from None
    convert.__name__ = flag.lstrip("-")
    return convert


def add_options(parser: argparse.ArgumentParser, cls: type,
                groups: dict[str, argparse._ArgumentGroup] | None = None, skip: tuple[str, ...] = (),
                suppress_defaults: bool = False) -> None:
    """One argument per declared field of `cls` (except `skip`); dest is the field name. With
    `suppress_defaults` only the options actually given appear in the parsed namespace."""
    groups = groups if groups is not None else {}
    for f in option_fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata["cli"]
        group = groups.get(meta["group"])
        if group is None:
            group = groups[meta["group"]] = parser.add_argument_group(meta["group"])
        flag = flag_of(f)
        default = _default_of(f)
        help_text = meta["help"] + (f" [{meta['unit']}]" if meta["unit"] else "")
        shown_default = argparse.SUPPRESS if suppress_defaults else default
        if isinstance(default, bool):
            action = "store_false" if meta["invert"] else "store_true"
            group.add_argument(flag, dest=f.name, action=action, default=shown_default, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": shown_default, "help": help_text}
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        else:
            kwargs["metavar"] = meta["metavar"] or flag.lstrip("-").upper().replace("-", "_")
        parse = meta["parse"] or (type(default) if default is not None else str)
        kwargs["type"] = _checked(parse, flag)
        group.add_argument(flag, **kwargs)


class DefaultsOnceFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` that states each default once: `(default: X)` is added only to an option that takes a value, has
    a default worth stating (not None, empty or suppressed) and whose help does not already state it
    (`default:`, or `default X` with its value). Flags (`--no-step-log`, `--resume`) never show one:
    `(default: True)` on a flag that switches something off reads backwards."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return super()._get_help_string(action) if states_default(action, text) else text


def states_default(action: argparse.Action, text: str) -> bool:
    """Whether `(default: X)` adds anything to the help `text` of `action` (see DefaultsOnceFormatter)."""
    default = action.default
    if action.nargs == 0 or not action.option_strings or default is None or default is argparse.SUPPRESS:
        return False
    if isinstance(default, (tuple, list, dict, set, str)) and not default:
        return False
    lowered = text.lower()
    return "default:" not in lowered and f"default {str(default).lower()}" not in lowered


def from_namespace(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build `cls` from the parsed options (fields without an option keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in option_fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def parse_float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers") from None


__all__ = ["option", "add_options", "DefaultsOnceFormatter", "states_default", "from_namespace", "flag_of",
           "option_fields", "parse_int", "parse_float", "parse_float_list"]
