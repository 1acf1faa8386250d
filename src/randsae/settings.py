"""Settings declared once: each field of a settings dataclass carries its default and its help, and the CLI
flag is generated from it — the name (`batch_size` → `--batch-size`), the type, and the help text with the
default as the dataclass has it. A flag defaults to None, so that only the flags a user gives override a
preset or a config file (`given`).
"""

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, *, help: str, default_factory: Callable[[], Any] | None = None,  # noqa: A002
            flag: str | None = None, parse: Callable[[str], Any] | None = None, shown: str | None = None) -> Any:
    """A dataclass field with its help. `flag` names the flag when it is not the field's name; `parse` reads
    its text (default: the field's type; a list field is read as text and parsed by `config.coerce`);
    `shown` says the default in words when its value would not (None: "computed from …")."""
    metadata = {"help": help, "flag": flag, "parse": parse, "shown": shown}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _scalar(hint) -> type:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint if hint in (int, float, str, bool) else str


def _default_text(f: dataclasses.Field) -> str:
    if f.metadata.get("shown"):
        return f.metadata["shown"]
    return value_text(f, f.default_factory() if f.default is _MISSING and f.default_factory is not _MISSING
                      else f.default)


def value_text(f: dataclasses.Field, value: Any) -> str:
    """A value of field `f` as its flag would take it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return flag_of(f) if value else "--no-" + flag_of(f).removeprefix("--")
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if len(value) <= 8 else \
            f"{len(value)} values"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def documented(cls) -> list[dataclasses.Field]:
    """The fields of `cls` that carry help (the ones a flag is made for)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls, exclude: Iterable[str] = (),
              defaults: dict[str, str] | None = None, prefix: str = "",
              helps: dict[str, str] | None = None, presets: dict[str, dict] | None = None) -> None:
    """A flag per documented field of `cls` (but `exclude`), its value stored under `prefix` + the field's
    name. `defaults` replaces the stated default of some fields (a command whose preset differs), `helps` the
    help of some (a command that takes more values); `presets` ({name: {field: value}}) adds each preset's
    value of a field to its stated default, from the values the preset sets."""
    hints = typing.get_type_hints(cls)
    for f in documented(cls):
        if f.name in exclude:
            continue
        # a setting's help is prose, not an argparse format string: a "%" in it is a percent sign
        text = str((helps or {}).get(f.name, f.metadata["help"])).replace("%", "%%")
        kind = _scalar(hints[f.name])
        shown = "; ".join([(defaults or {}).get(f.name) or _default_text(f)] + [
            f"the {name} preset: {value_text(f, values[f.name])}"
            for name, values in (presets or {}).items() if f.name in values]).replace("%", "%%")
        if kind is bool and f.default is None:  # undecided unless given: --x and --no-x
            parser.add_argument(flag_of(f), dest=prefix + f.name, action="store_const", const=True, default=None,
                                help=f"{text} (default {shown})")
            parser.add_argument("--no-" + flag_of(f).removeprefix("--"), dest=prefix + f.name,
                                action="store_const", const=False, default=None, help=argparse.SUPPRESS)
            continue
        if kind is bool:
            on = f.default is not True
            name = flag_of(f) if on else "--no-" + flag_of(f).removeprefix("--")
            parser.add_argument(name, dest=prefix + f.name, action="store_const", const=on, default=None,
                                help=text)
            continue
        parser.add_argument(flag_of(f), dest=prefix + f.name, type=f.metadata.get("parse") or kind, default=None,
                            metavar=f.name.upper(), help=f"{text} (default {shown})")


def given(args: argparse.Namespace, cls, exclude: Iterable[str] = (), prefix: str = "") -> dict[str, Any]:
    """{field: value} of the flags of `cls` that were given."""
    values = {f.name: getattr(args, prefix + f.name, None) for f in documented(cls) if f.name not in exclude}
    return {name: value for name, value in values.items() if value is not None}


def differs(settings, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """{field: value} of a settings object's documented fields whose value is not their default (but `exclude`):
    what a report says was set, the rest being the defaults."""
    out = {}
    for f in documented(type(settings)):
        default = f.default_factory() if f.default is _MISSING and f.default_factory is not _MISSING else f.default
        value = getattr(settings, f.name)
        if f.name not in exclude and value != default:
            out[f.name] = value
    return out
