"""The machinery behind every amray config tree (the run config, the preprocessing config):
YAML file, dotted overrides, and validation of a raw mapping into typed dataclasses.

    cfg = load_tree(Config, "run.yaml", ["trainer.lr=1e-6"])
    check_tree(cfg)                      # a tree built or changed in Python, checked the same way

What a field accepts is its annotation: its type, `Literal[...]` for a closed set of values,
`Annotated[int, Bound(low=1)]` (aliases `PositiveInt` etc. below) for a range. A section may add
checks between fields with a `validate(self) -> list[tuple[str, str]]` method returning (field,
what is wrong). Every error names the key. Field docstrings (the string literal under a field) are
the documentation `--help` prints (`describe_tree`).
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import difflib
import functools
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Annotated

import yaml


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Bound:
    """The range a number field allows: `Annotated[int, Bound(low=1)]`. `low_open`: low itself is
    not allowed (`> 0` rather than `>= 0`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def problem(self, value: float) -> str | None:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"must be {self}, got {value!r}"
        if self.high is not None and value > self.high:
            return f"must be {self}, got {value!r}"
        return None

    def __str__(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is None:
            return low or "any number"
        return f"{low} and <= {self.high:g}" if low else f"<= {self.high:g}"


PositiveInt = Annotated[int, Bound(1)]
"""A count that must be at least 1 (workers, samples, batch sizes)."""
NonNegativeInt = Annotated[int, Bound(0)]
"""At least 0 (0 usually means off, or all)."""
PositiveFloat = Annotated[float, Bound(0, low_open=True)]
NonNegativeFloat = Annotated[float, Bound(0)]
Fraction = Annotated[float, Bound(0, 1)]
"""0 to 1, both included."""
PositiveFraction = Annotated[float, Bound(0, 1, low_open=True)]
"""Above 0, at most 1 (top_p, a share of GPU memory)."""


def read_yaml(path: str | Path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot be read ({e.strerror})") from None
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


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls, include_extras=True)  # extras: the Annotated bounds


def build_section(cls: type, raw: dict, prefix: str, default: object) -> object:
    """Validate a raw mapping into dataclass `cls` (keys under `prefix` in messages)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        near = difflib.get_close_matches(str(unknown[0]), names, n=1)
        hint = f"did you mean {prefix}{near[0]}? " if near else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} ({hint}valid keys in "
                          f"{prefix.rstrip('.') or 'config'}: {', '.join(sorted(names))})")
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
    section = cls(**values)
    _run_validate(section, prefix)
    return section


def check_tree(tree: object, prefix: str = "") -> None:
    """Check a tree built or changed in Python as a loaded one is checked: every value against its
    annotation (type, choices, bounds), then each section's `validate`. Raises ConfigError naming
    the first bad key."""
    hints = _hints(type(tree))
    for f in dataclasses.fields(tree):
        value, key, tp = getattr(tree, f.name), prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, tp):
                raise ConfigError(f"config key {key}: expected a {tp.__name__} section, got {value!r}")
            check_tree(value, key + ".")
        elif _coerce(value, tp, key) != value or (isinstance(value, (list, tuple)) and not isinstance(value, _base(tp))):
            raise ConfigError(f"config key {key}: {value!r} is not a {_type_text(tp)}")
    _run_validate(tree, prefix)


def _base(tp: object) -> type:
    """The container type a list/tuple annotation (maybe Optional or Annotated) stands for."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if _is_union(tp) else [tp]
    for a in args:
        a = _strip(a)
        if typing.get_origin(a) in (list, tuple):
            return typing.get_origin(a)
    return object


def _run_validate(section: object, prefix: str) -> None:
    check = getattr(section, "validate", None)
    for name, problem in (check() if callable(check) else []):
        raise ConfigError(f"config key {prefix}{name}: {problem}")


def _is_union(tp: object) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _strip(tp: object) -> object:
    """`Annotated[int, ...]` -> int."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _is_text(tp: object) -> bool:
    tp = _strip(tp)
    return tp is str or (typing.get_origin(tp) is typing.Literal and all(isinstance(a, str) for a in typing.get_args(tp)))


def _coerce(value: object, tp: object, key: str) -> object:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        value = _coerce(value, args[0], key)
        for bound in args[1:]:
            if isinstance(bound, Bound) and value is not None and (problem := bound.problem(value)):
                raise ConfigError(f"config key {key}: {problem}")
        return value
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message says what is wrong
            return _coerce(value, options[0], key)
        for arg in options:
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key {key}: {value!r} is not a {_type_text(tp)}")
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):  # True is not 1
            return value
        near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ConfigError(f"config key {key}: {value!r} is not one of {', '.join(map(str, args))}{hint}")
    if origin in (list, tuple):
        if origin is list and _is_text(args[0]) and isinstance(value, str):  # `a,b` on a command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        if origin is tuple and len(args) != len(value) and not (len(args) == 2 and args[1] is Ellipsis):
            raise ConfigError(f"config key {key}: expected {len(args)} values, got {value!r}")
        inner = args if origin is tuple else [args[0]] * len(value)
        out = [_coerce(v, t, key) for v, t in zip(value, inner)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key}: expected a mapping, e.g. {{name: 1}}, got {value!r}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
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


def to_yaml(tree: object) -> str:
    """The tree as the YAML a `--config` file holds (loading it back gives the same tree)."""

    def plain(value: object) -> object:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return yaml.safe_dump(plain(to_dict(tree)), sort_keys=False, allow_unicode=True, width=1000)


# --- documentation: every key, its default, what it accepts and its docstring (for --help) ---

def _type_text(tp: object) -> str:
    """What a field accepts, in a user's words: `int >= 1`, `one of a, b`, `list of str`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        bounds = " and ".join(str(b) for b in args[1:] if isinstance(b, Bound))
        return f"{_type_text(args[0])} {bounds}".strip()
    if _is_union(tp):
        return " or ".join("null" if a is type(None) else _type_text(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type_text(a) for a in args) + "]"
    return getattr(tp, "__name__", str(tp))


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal right under it in the class body), inherited
    ones included; read from the source, where the documentation of a field lives."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, IndexError):  # no source (a frozen app): keys keep no docs
            continue
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def describe_tree(cls: type, default: object | None = None, prefix: str = "", width: int = 100) -> str:
    """Every key of the tree, one entry each: `key = default  (what it accepts)` and its docstring;
    sections as headings with their own docstring."""
    default = default if default is not None else cls()
    hints, docs, values, lines = _hints(cls), field_docs(cls), to_dict(default), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        value = yaml.safe_dump(values[f.name], default_flow_style=True, width=1000).strip().removesuffix("...").strip()
        lines.append(f"  {prefix}{f.name} = {value}   ({_type_text(hints[f.name])})")
        if f.name in docs:
            lines += textwrap.wrap(docs[f.name], width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if not dataclasses.is_dataclass(tp):
            continue
        about = docs.get(f.name) or inspect.cleandoc(tp.__doc__ or "")
        if about.startswith(f"{tp.__name__}("):  # the dataclass's generated signature, not a docstring
            about = ""
        lines.append("")
        about = " ".join(about.split("\n\n")[0].split())  # its first paragraph, on one line
        lines.append(f"{prefix}{f.name}:" + (f"  {about}" if about else ""))
        lines.append(describe_tree(tp, getattr(default, f.name), f"{prefix}{f.name}.", width))
    return "\n".join(lines)
