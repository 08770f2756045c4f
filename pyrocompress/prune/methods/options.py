"""Method options: typed dataclasses, parsed once from text (CLI flags, TOML tables, keyword arguments).

A method's options are a frozen dataclass; :func:`parse_options` turns a mapping of raw values
into it, converting each value by its field's type (``Choice`` Enums through their aliases,
integers and numbers with the bounds in the field's metadata, tuples of layer names, scores
through the score registry) and refusing unknown keys with the valid ones. An error is an
:class:`OptionError` that carries the offending key, so that each front door can name it its
own way (``--finetune-epochs`` on the command line, ``methods[2].finetune_epochs (line 41)``
in a study file).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from enum import Enum
from typing import Any, Mapping, Optional, TypeVar

from ...diagnostics.scores import get_score
from ...errors import UserError
from ...names import Choice, normalise

__all__ = ["OptionError", "parse_options", "options_dict", "option_names", "count", "number", "score_field"]

T = TypeVar("T")


class OptionError(UserError):
    """An option has an unknown name or a bad value; ``key`` names it."""

    def __init__(self, message: str, key: Optional[str] = None) -> None:
        super().__init__(message)
        self.key = key


def count(default: Any, minimum: int = 0, doc: str = "") -> Any:
    """A dataclass field holding an integer >= ``minimum`` (or None where the default is None)."""
    return dataclasses.field(default=default, metadata={"min": minimum, "doc": doc})


def number(default: Any, low: float = 0.0, high: float = math.inf, open_low: bool = False, open_high: bool = False,
           doc: str = "") -> Any:
    """A dataclass field holding a number in the given interval."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high, "open_low": open_low,
                                                        "open_high": open_high, "doc": doc})


def score_field(default: Optional[str], doc: str = "") -> Any:
    """A dataclass field holding a registered score's name (aliases resolved), or None for the method's default."""
    return dataclasses.field(default=default, metadata={"score": True, "doc": doc})


def option_names(cls: type) -> list[str]:
    """The option keys of an options dataclass (without aliases)."""
    return [f.name for f in dataclasses.fields(cls)]


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _convert(key: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise OptionError(f"option {key!r} needs a value", key)
    if meta.get("score"):
        try:
            return get_score(value).name
        except ValueError as exc:
            raise OptionError(f"{exc} (option {key!r})", key) from None
    if isinstance(tp, type) and issubclass(tp, Choice):
        try:
            return tp.parse(value)
        except ValueError as exc:
            raise OptionError(f"{exc} (option {key!r})", key) from None
    if tp is bool:
        if not isinstance(value, bool):
            raise OptionError(f"option {key!r} must be true or false, got {value!r}", key)
        return value
    if tp is int:
        low = meta.get("min", 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise OptionError(f"option {key!r} must be an integer >= {low}, got {value!r}", key)
        return int(value)
    if tp is float:
        lo, hi = meta.get("low", -math.inf), meta.get("high", math.inf)
        olo, ohi = meta.get("open_low", False), meta.get("open_high", False)
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (lo < value if olo else lo <= value) and (value < hi if ohi else value <= hi))
        if not ok:
            interval = f"{'(' if olo else '['}{lo:g}, {hi:g}{')' if ohi else ']'}"
            raise OptionError(f"option {key!r} must be a number in {interval}, got {value!r}", key)
        return float(value)
    if typing.get_origin(tp) is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise OptionError(f"option {key!r} must be a list of names, got {value!r}", key)
        return tuple(items)
    if typing.get_origin(tp) in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise OptionError(f"option {key!r} must be a table of options, got {value!r}", key)
        return dict(value)
    if tp is str:
        if not isinstance(value, str):
            raise OptionError(f"option {key!r} must be a string, got {value!r}", key)
        return value
    raise TypeError(f"option {key!r}: unsupported option type {tp!r}")  # pragma: no cover - a programming error


def parse_options(cls: type[T], values: Mapping[str, Any], what: str) -> T:
    """Build the options dataclass ``cls`` from raw ``values`` (``what`` names the method in errors).

    Keys are read with ``-`` as ``_``; ``cls.KEY_ALIASES`` (``{alias: key}``) maps other names
    of an option; unknown keys raise an :class:`OptionError` listing the valid ones.
    """
    aliases: Mapping[str, str] = getattr(cls, "KEY_ALIASES", {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    raw: dict[str, Any] = {}
    for given, value in values.items():
        key = normalise(given)
        key = aliases.get(key, key)
        if key not in fields:
            raise OptionError(f"unknown option {given!r} for {what}; valid options: {sorted(fields)}", given)
        if key in raw:
            raise OptionError(f"option {key!r} is given twice (as {given!r} too) for {what}", given)
        raw[key] = value
    converted = {k: _convert(k, v, hints[k], fields[k].metadata) for k, v in raw.items()}
    try:
        return cls(**converted)
    except OptionError:
        raise
    except ValueError as exc:
        raise OptionError(str(exc), getattr(exc, "key", None)) from None


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def options_dict(options: Any) -> dict[str, Any]:
    """The options as JSON-ready values (Enums as their names, tuples as lists)."""
    return {f.name: _plain(getattr(options, f.name)) for f in dataclasses.fields(options)}
