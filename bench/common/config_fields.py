"""The one config validator: TOML tables checked against frozen dataclasses, key by key.

Sweep configs (bench/harness/config.py) and accuracy configs (bench/accuracy/config.py) are frozen
dataclasses with a default and a help string per field (nanoGPT's GPTConfig, optimum-benchmark's
configs). `build(cls, table, where)` turns a parsed TOML table into one, by the fields' declared
types, with the same rules for every config:

    int / float / str / bool     that type (an int is accepted for a float; a bool is never a number; a
                                 float must be finite, an int must fit 64 bits: TOML accepts nan, inf
                                 and integers of any size, no setting means them)
    tuple[X, ...]                one X or a list of them
    dict                         a table
    a dataclass                  a [section] table, checked recursively
    metadata["parse"]            a field that needs more (a range table, nested options) parses itself

An unknown key is an error naming it, with a "did you mean" and the valid keys. Also here: `--set
key=value` overrides, byte sizes ('8GiB'), and finding a shipped config by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from pathlib import Path
from typing import Any

import tomllib

from models.errors import UserInputError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
ACCURACY_PREFIX = "accuracy"  # bench/configs/accuracy*.toml are `ssamba-bench accuracy` configs, not sweeps
LOADER_FIELDS = ("source",)  # fields the loader sets, never the file

_TYPE_WORDS = {int: "an integer", float: "a float", str: "a string", bool: "a boolean"}
INT64 = (-(2**63), 2**63 - 1)
MAX_BYTES = 2**50  # 1 PiB: a byte size above it is a typo, not a machine (and must fit 64-bit limits)


def suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_error(where: str, key: str, valid) -> UserInputError:
    return UserInputError(f"{where}: unknown key {key!r}{suggest(key, valid)}; valid keys: {', '.join(sorted(valid))}")


def _scalar(kind: type, key: str, value: Any, where: str, *, in_list: bool = False):
    ok = isinstance(value, (int, float) if kind is float else kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        also = " or a list of them" if in_list else ""
        raise UserInputError(f"{where}: {key} must be {_TYPE_WORDS[kind]}{also}, got {short_repr(value)}")
    if kind is float:
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise UserInputError(f"{where}: {key} must be a finite number, got {short_repr(value)}")
        return number
    if kind is int and not INT64[0] <= value <= INT64[1]:
        raise UserInputError(f"{where}: {key} must fit in 64 bits, got {short_repr(value)}")
    return value


def short_repr(value: Any, limit: int = 60) -> str:
    """repr() for an error line: a hostile value (a 10,000-digit integer, a long table) stays short."""
    try:
        text = repr(value)
    except ValueError:  # an int (or a list holding one) too long for repr: Python caps int-to-str
        return "a number too long to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def coerce(kind, key: str, value: Any, where: str):
    """`value` as the declared type `kind` (see the module docstring), or a UserInputError."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise UserInputError(f"{where}: [{key}] must be a table")
        return build(kind, value, f"{where} [{key}]")
    origin = typing.get_origin(kind)
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        items = value if isinstance(value, list) else [value]
        return tuple(_scalar(item_kind, key, item, where, in_list=True) for item in items)
    if kind is dict or origin is dict:
        if not isinstance(value, dict):
            raise UserInputError(f"{where}: {key} must be a table, got {value!r}")
        return dict(value)
    return _scalar(kind, key, value, where)


def build(cls, table: dict, where: str):
    """An instance of the dataclass `cls` from a TOML table; every key and value checked."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in LOADER_FIELDS}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            raise unknown_key_error(where, key, fields)
        parse = fields[key].metadata.get("parse")
        kwargs[key] = parse(value, key, where) if parse else coerce(hints[key], key, value, where)
    return cls(**kwargs)


def describe_fields(cls, prefix: str = "") -> list[tuple[str, str]]:
    """(key, help) for every key a config file of `cls` may hold; sections as dotted keys."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in LOADER_FIELDS:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, f.metadata.get("help", "")))
    return rows


def parse_bytes(text: str | int) -> int:
    """'8GiB' -> 8589934592; '512MB' -> 512000000; plain integers are bytes. At least one byte and at
    most MAX_BYTES, else a UserInputError."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = re.fullmatch(r"\s*([0-9]{0,20}\.?[0-9]{1,20})\s*([KMGT]i?B|B)?\s*", str(text), flags=re.IGNORECASE)
        if not match:
            raise UserInputError(f"memory_cap {short_repr(text)} is not a size; write e.g. '8GiB', '512MiB' or a "
                                 f"byte count")
        number, unit = float(match.group(1)), (match.group(2) or "B").upper()
        scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
        size = int(number * scale)
    if not 1 <= size <= MAX_BYTES:
        raise UserInputError(f"memory_cap {short_repr(text)} must be between 1 byte and {MAX_BYTES // 2**40} TiB")
    return size


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """`steady.max_time_s=5` -> (['steady', 'max_time_s'], 5). Values are TOML, else a bare string."""
    if "=" not in assignment:
        raise UserInputError(f"--set {assignment!r}: expected key=value (e.g. --set tokens=[128,256])")
    key, raw = assignment.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise UserInputError(f"--set {assignment!r}: {key!r} is not a config key")
    if not raw:
        raise UserInputError(f"--set {assignment!r}: missing value after '='")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (ValueError, RecursionError):  # TOMLDecodeError; an integer of thousands of digits; absurd nesting
        if raw[0] in "[{\"'":
            raise UserInputError(f"--set {assignment!r}: {raw!r} is not a valid TOML value") from None
        value = raw  # a bare word: memory_cap=8GiB, device=cpu
    return key.split("."), value


def apply_set(table: dict, assignment: str) -> list[str]:
    """Apply one `--set` override to a parsed TOML table in place; returns the dotted key's parts."""
    keys, value = parse_set(assignment)
    target = table
    for k in keys[:-1]:
        target = target.setdefault(k, {})
        if not isinstance(target, dict):
            raise UserInputError(f"--set {assignment!r}: {k!r} is not a table")
    target[keys[-1]] = value
    return keys


def read_toml(path: Path) -> dict:
    """A TOML file's table; a file that cannot be read or is not UTF-8 TOML is one UserInputError."""
    try:
        data = path.read_bytes()
    except OSError as err:  # a directory, no permission, an I/O error
        raise UserInputError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not a TOML file (not UTF-8 text: byte {err.start} is {data[err.start]:#04x})") \
            from None
    try:
        return tomllib.loads(text)
    except ValueError as err:  # TOMLDecodeError, or an integer of thousands of digits
        raise UserInputError(f"{path}: not valid TOML: {str(err)[:200]}") from None
    except RecursionError:
        raise UserInputError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None


def resolve_path(config: str, *, accuracy: bool = False) -> Path:
    """A path to a .toml file, or the name of a shipped config in bench/configs/: a sweep (`default`,
    `paper`, `ci`, ...) or, with `accuracy`, an accuracy run (`accuracy`, `accuracy_ci`)."""
    path = Path(config)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{config}.toml"
    if not path.suffix and shipped.is_file():
        if config.startswith(ACCURACY_PREFIX) != accuracy:
            verb = "sweep" if accuracy else "accuracy"
            raise UserInputError(f"{config!r} is {'a sweep' if accuracy else 'an accuracy'} config: run it with "
                                 f"`ssamba-bench {verb} {config}`")
        return shipped
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.toml") if p.stem.startswith(ACCURACY_PREFIX) == accuracy)
    what = "accuracy config" if accuracy else "config file"
    raise UserInputError(f"no {what} {config!r}; give a path to a .toml file or one of: {', '.join(names)}")
