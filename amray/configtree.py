"""The machinery behind every amray config tree (the run config, the preprocessing config):
YAML file, dotted overrides, and validation of a raw mapping into typed dataclasses.

    cfg = load_tree(Config, "run.yaml", ["trainer.lr=1e-6"])

Unknown keys and values of the wrong type are rejected with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


def read_yaml(path: str | Path) -> dict:
    text = Path(path).read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except (yaml.YAMLError, ValueError) as e:  # ValueError: a date-like value such as 2024-13-01
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`a.b=value` items into the raw mapping (values parsed as YAML scalars: 1e-6, true, [a, b])."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. trainer.lr=1e-6")
        node = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
        node[leaf] = _scalar(value)
    return raw


def load_tree(cls: type, path: str | Path | None = None, overrides: list[str] | None = None,
              base: object | None = None) -> object:
    """Defaults (or `base`) <- YAML file <- overrides, validated into dataclass `cls`."""
    raw = read_yaml(path) if path else {}
    apply_overrides(raw, list(overrides or []))
    return build_section(cls, raw, "", base if base is not None else cls())


def _scalar(text: str) -> object:
    """An override's value as YAML reads it; text YAML cannot read stays text."""
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # ValueError: a date-like value such as 2024-13-01
        return text


def build_section(cls: type, raw: dict, prefix: str, default: object) -> object:
    """Validate a raw mapping into dataclass `cls` (keys under `prefix` in messages)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (valid keys in {prefix.rstrip('.') or 'config'}: {', '.join(sorted(names))})")
    values = {}
    for f in dataclasses.fields(cls):
        current = getattr(default, f.name)
        if f.name not in raw:
            values[f.name] = current
            continue
        key = prefix + f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            values[f.name] = build_section(tp, raw[f.name], key + ".", current)
        else:
            values[f.name] = _coerce(raw[f.name], tp, key)
    return cls(**values)


def _coerce(value: object, tp: object, key: str) -> object:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key {key}: {value!r} is not a valid {tp}")
    if origin in (list, tuple):
        if origin is list and args == (str,) and isinstance(value, str):  # `a,b` on a command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        if origin is tuple and len(args) != len(value) and not (len(args) == 2 and args[1] is Ellipsis):
            raise ConfigError(f"config key {key}: expected {len(args)} values, got {value!r}")
        inner = args if origin is tuple else [args[0]] * len(value)
        out = [_coerce(v, t, key) for v, t in zip(value, inner)]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, datetime.date):  # YAML reads 2024-10-01 as a date; the setting is its text
            return value.isoformat()
        raise ConfigError(f"config key {key}: expected a string, got {value!r}")
    return value


def to_dict(cfg: object) -> dict:
    return dataclasses.asdict(cfg)
