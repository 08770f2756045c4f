"""How much to prune: a target sparsity, a compression ratio, a score threshold, or the automatic threshold.

A target is validated once, where it enters (the CLI, a study's grid, a keyword argument):
:class:`Sparsity` checks its value on construction, and code below takes the object as it
is. :func:`as_sparsity` lets public functions accept a plain number (validated) or a
:class:`Sparsity` (already valid).

A compression ratio *c* (parameters of the dense network / nonzero parameters of the
pruned one) is reached as follows: unstructured pruning deletes the fraction of the
prunable weights that leaves 1/*c* of all parameters (biases are kept, so slightly more
than 1 - 1/*c* of the weights: :func:`weight_sparsity_for`); structured pruning searches
the unit sparsity whose physically shrunk network has *c* times fewer parameters
(:func:`search_unit_sparsity`); when safety rules stop short, the reached ratio is what
is recorded.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union

from torch import nn

from ..errors import UserError
from ..metrics import parameter_counts

__all__ = ["Target", "Sparsity", "Compression", "Threshold", "AutoThreshold", "check_sparsity", "as_sparsity",
           "make_target", "weight_sparsity_for", "search_unit_sparsity", "total_params"]

T = TypeVar("T")


def _finite(value: Any, ok: Callable[[float], bool], message: str) -> float:
    """``value`` as a float if it is a finite number passing ``ok``, else ``ValueError(message)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise UserError(message)
    return float(value)


def check_sparsity(sparsity: Any) -> float:
    """Validate a target sparsity: a number in [0, 1)."""
    return _finite(sparsity, lambda s: 0.0 <= s < 1.0, "sparsity must be a number in [0, 1) (the fraction deleted; "
                                                       f"1 would delete everything), got {sparsity!r}")


class Target:
    """Base of the targets (a pruning method says which kinds it accepts)."""

    #: how the target is written on the command line and as a keyword
    flag: str = ""

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Sparsity(Target):
    """Delete this fraction of the candidate weights (or of the candidate units, for structured pruning)."""

    value: float
    flag = "sparsity"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", check_sparsity(self.value))

    def describe(self) -> str:
        return f"sparsity {self.value:g}"


@dataclass(frozen=True)
class Compression(Target):
    """Shrink the network's parameter count (dense / nonzero) by this ratio (>= 1)."""

    ratio: float
    flag = "compression"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", _finite(self.ratio, lambda r: r >= 1.0, "compression must be a finite "
                                                  f"ratio >= 1 (dense parameters / nonzero parameters), got "
                                                  f"{self.ratio!r}"))

    def describe(self) -> str:
        return f"compression {self.ratio:g}x"


@dataclass(frozen=True)
class Threshold(Target):
    """Delete what scores strictly below this value."""

    value: float
    flag = "threshold"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _finite(self.value, lambda v: True,
                                                  f"threshold must be a finite number, got {self.value!r}"))

    def describe(self) -> str:
        return f"threshold {self.value:g}"


@dataclass(frozen=True)
class AutoThreshold(Target):
    """Per layer, the prior's own deletion rule, or the data-driven two-mode threshold
    (see :func:`pyrocompress.prune.policy.auto_threshold`)."""

    min_separation: float = 0.5
    flag = "auto_threshold"

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_separation", _finite(
            self.min_separation, lambda v: v > 0, f"min_separation must be a positive number of decades, got "
                                                  f"{self.min_separation!r}"))

    def describe(self) -> str:
        return "automatic threshold"


def as_sparsity(value: Union[float, Sparsity]) -> Sparsity:
    """A :class:`Sparsity` from a number (validated here) or as it is (validated when it was made)."""
    return value if isinstance(value, Sparsity) else Sparsity(value)


def make_target(sparsity: Optional[float] = None, compression: Optional[float] = None,
                threshold: Optional[float] = None, auto: bool = False,
                min_separation: float = 0.5) -> Optional[Target]:
    """The one target given, validated; None when none is given; an error naming them when several are."""
    given = [name for name, value in (("sparsity", sparsity), ("compression", compression),
                                      ("threshold", threshold)) if value is not None]
    if auto:
        given.append("auto_threshold")
    if len(given) > 1:
        flags = ", ".join(f"--{g.replace('_', '-')}" for g in given)
        raise UserError(f"give only one of --sparsity, --compression, --threshold, --auto-threshold "
                         f"(got {flags})")
    if sparsity is not None:
        return Sparsity(sparsity)
    if compression is not None:
        return Compression(compression)
    if threshold is not None:
        return Threshold(threshold)
    if auto:
        return AutoThreshold(min_separation)
    return None


def total_params(net: nn.Module) -> int:
    """Every parameter of a plain network's Linear / Conv2d layers (weights and biases)."""
    return parameter_counts(net)["total"]["params"]


def weight_sparsity_for(net: nn.Module, ratio: float) -> Sparsity:
    """The fraction of prunable weights to delete so that all parameters (biases stay) shrink ``ratio``-fold."""
    total = total_params(net)
    weights = sum(int(m.weight.numel()) for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    if weights == 0:
        raise UserError("the network has no Linear or Conv2d weights to prune")
    keep = (total / ratio - (total - weights)) / weights
    return Sparsity(float(min(max(1.0 - keep, 0.0), 0.999)))


def _probe(make: Callable[[Sparsity], T], s: float) -> tuple[T, list]:
    """``make(Sparsity(s))`` with the warnings it raises kept, not shown (a probe of a search is not a result)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        return make(Sparsity(s)), list(caught)


def search_unit_sparsity(dense_params: int, ratio: float, make: Callable[[Sparsity], T],
                         size_of: Callable[[T], int], iters: int = 14) -> tuple[T, float, dict]:
    """Bisect the unit sparsity s so that ``dense_params / size_of(make(s))`` reaches ``ratio``.

    Returns the candidate at the smallest s that reaches it (or the largest s tried when
    none does), the unit sparsity, and search info. Only the chosen candidate's warnings
    are shown (the probes at other sparsities are not results).
    """
    lo, hi = 0.0, 0.995
    best, caught = _probe(make, hi)
    best_s = hi
    reached_max = dense_params / max(size_of(best), 1)
    if reached_max < ratio:
        info = {"target_reached": False, "reached_compression": reached_max}
    else:
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            cand, seen = _probe(make, mid)
            if dense_params / max(size_of(cand), 1) >= ratio:
                hi, best, best_s, caught = mid, cand, mid, seen
            else:
                lo = mid
        info = {"target_reached": True, "unit_sparsity": best_s}
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return best, best_s, info
