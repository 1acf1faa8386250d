"""Typed experiment configs: read from TOML/JSON files and CLI strings, validated with one-sentence errors."""

import dataclasses
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import numpy as np
import torch

from randsae.errors import BadInput


def parse_coefficients(text: str) -> list[float]:
    """A comma list ('0.001,0.01') or 'start:stop:num' (log-spaced, both ends included)."""
    text = text.strip()
    try:
        if ":" in text:
            start, stop, num = text.split(":")
            start_f, stop_f, count = float(start), float(stop), int(num)
            if start_f <= 0 or stop_f <= 0 or count < 1:
                raise ValueError
            values = np.logspace(math.log10(start_f), math.log10(stop_f), count).tolist()
        else:
            values = [float(part) for part in text.split(",")]
    except ValueError:
        raise BadInput(
            f"cannot read coefficients {text!r}: give a comma list like 0.001,0.01 or start:stop:num "
            "with positive start and stop, like 0.001:100:21.") from None
    check_coefficients(values, text)
    return values


# above this an L1 coefficient's gradient, squared by Adam, overflows float32 (3.4e38) and training stops moving
MAX_COEFFICIENT = 1e15
# the sizes of the samples measured beside every SAE, by default (declared once: the flags and presets read them)
FIT_TOKENS = 64_000  # training tokens an SAE's baselines are fitted on (and its training EV measured on)
EVAL_TOKENS = 64_000  # held-out tokens the quality eval reads at most
PROBE_TOKENS = 64_000  # training and held-out tokens the k-sparse probes are fitted and tested on


def check_coefficients(values: list[float], given: object) -> None:
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise BadInput(f"coefficients must be finite and non-negative, not {given!r}.")
    if max(values) > MAX_COEFFICIENT:
        raise BadInput(f"coefficient {max(values):g} is above {MAX_COEFFICIENT:g}: its gradient, squared by the "
                       "optimiser, overflows float32 and the SAE would not train; give smaller coefficients.")


def parse_list(text: str, item_type: type) -> list:
    """A comma-separated list of `item_type` values."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise BadInput(f"expected a comma-separated list, not {text!r}.")
    try:
        return [item_type(part) for part in parts]
    except ValueError:
        raise BadInput(f"cannot read {text!r} as a list of {item_type.__name__} values.") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file, as a flat dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot parse config file {path}: {e}.") from None
    if not isinstance(values, dict):
        raise BadInput(f"config file {path} holds a {type(values).__name__}, not a table of settings.")
    return values


def coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check `values` against the fields of dataclass `cls`, converting strings where a field wants a list."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    unknown = sorted(set(values) - names)
    if unknown:
        raise BadInput(f"unknown setting {unknown[0]!r}; known settings are {', '.join(sorted(names))}.")
    out = {}
    for name, value in values.items():
        hint = hints[name]
        if hint in SCALARS:
            out[name] = strict_scalar(name, value, hint)
            continue
        optional = optional_scalar(hint)
        if optional is not None:  # "X or None": checked as an X unless it is None
            parse = fields[name].metadata.get("parse")
            out[name] = value if value is None else (
                parse(value) if isinstance(value, str) and parse is not None and optional is not str
                else strict_scalar(name, value, optional))
            continue
        if get_origin(hint) is list:
            (item_type,) = get_args(hint)
            parse = fields[name].metadata.get("parse")
            if isinstance(value, str):  # the text the flag would take, read by the flag's own parser
                value = (parse(value) if parse is not None else parse_coefficients(value) if item_type is float
                         else parse_list(value, item_type))
            elif not isinstance(value, list):
                value = [value]
            value = [strict_scalar(name, v, item_type) for v in value]
        out[name] = value
    return out


SCALARS = (bool, int, float, str)


def optional_scalar(hint: Any) -> type | None:
    """X of a field typed `X | None` with X a scalar, else None."""
    args = get_args(hint)
    if len(args) == 2 and type(None) in args:
        (kind,) = [a for a in args if a is not type(None)]
        return kind if kind in SCALARS else None
    return None


def strict_scalar(name: str, value: Any, kind: type) -> Any:
    """`value` as a `kind`, refusing what is not already one: a string is not a number or a bool, a bool is
    not a number, a float is not an int (an int is a fine float)."""
    ok = (isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)) or (
        kind is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise BadInput(f"setting {name} must be {article} {kind.__name__}, not {value!r}.")
    return float(value) if kind is float else value


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when PyTorch sees a GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise BadInput(f"device must be auto, cpu, cuda, cuda:N or mps, not {name!r}.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput("device cuda was asked for but PyTorch sees no CUDA GPU.")
    return torch.device(name)


_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}


def parse_count(text: str) -> int:
    """'1M', '100m', '500k', '2048' → an integer."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMbB]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise BadInput(f"cannot read {text!r} as a count like 2048, 500k or 1M.")
    count = int(float(match[1]) * _SUFFIXES[match[2].lower()])
    if count < 1:
        raise BadInput(f"{text!r} is less than one.")
    return count
