"""The vocabulary: every string option of pyrocompress as a ``str`` Enum, with its aliases, in one place.

Options arrive as text (command-line flags, TOML values, keyword arguments) and are turned
into these Enums once, at the edge, by :meth:`Choice.parse`; everything below the edge
compares Enum members. A value is matched case-insensitively with ``-`` read as ``_``,
then looked up in the Enum's aliases; an unknown value raises a one-line ``ValueError``
that lists the valid ones. Aliases are plain synonyms (no deprecation): old spellings keep
working.

Two words deserve a note. ``group`` is the diagnostics' name of one output neuron or
conv kernel (:class:`Level`), and the pruning structure that deletes both kinds of output
units is ``unit`` (:class:`Structure`): the same granularity, so each vocabulary accepts
the other's word. The score registry's names and aliases (``norm`` is the L2 norm of a
weight group, i.e. the ``magnitude`` score per group) are in :data:`SCORE_ALIASES`; the
method registry's in :data:`METHOD_ALIASES`.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar, Mapping, Optional, TypeVar

from .errors import UserError

__all__ = ["Choice", "Structure", "Scope", "Level", "Kind", "Mode", "Schedule", "GradualStart", "Reduction",
           "SCORE_ALIASES", "METHOD_ALIASES", "normalise", "resolve_alias"]

C = TypeVar("C", bound="Choice")


def normalise(value: Any) -> str:
    """The lookup key of a name: lower case, ``-`` and spaces read as ``_``."""
    return str(value).strip().lower().replace("-", "_").replace(" ", "_")


def resolve_alias(value: Any, aliases: Mapping[str, str]) -> str:
    """``value`` normalised and mapped through ``aliases`` (unknown names pass through unchanged)."""
    key = normalise(value)
    return aliases.get(key, key)


class Choice(str, Enum):
    """A string option with a closed set of values and their aliases."""

    #: human name of the option in error messages (``structure``, ``scope``, ...)
    __what__: ClassVar[str] = "value"

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def aliases(cls) -> Mapping[str, str]:
        """``{alias: canonical value}`` (none by default)."""
        return {}

    @classmethod
    def parse(cls: type[C], value: Any, what: Optional[str] = None) -> C:
        """The member named by ``value`` (a member, its value, or an alias)."""
        if isinstance(value, cls):
            return value
        key = resolve_alias(value, cls.aliases())
        for member in cls:
            if member.value == key:
                return member
        what = what or cls.__what__
        raise UserError(f"unknown {what} {value!r}; valid {what}s: {[m.value for m in cls]}")


class Structure(Choice):
    """What a pruning policy deletes: single weights, or whole output units."""

    __what__ = "structure"
    WEIGHT = "weight"        # unstructured
    NEURON = "neuron"        # output neurons of hidden Linear layers
    KERNEL = "kernel"        # kernels (output channels) of Conv2d layers
    UNIT = "unit"            # neurons and kernels

    @classmethod
    def aliases(cls) -> Mapping[str, str]:
        return {"unstructured": "weight", "weights": "weight", "neurons": "neuron", "kernels": "kernel",
                "channel": "kernel", "channels": "kernel", "filter": "kernel", "filters": "kernel",
                "units": "unit", "group": "unit", "groups": "unit"}

    @property
    def structured(self) -> bool:
        return self is not Structure.WEIGHT


class Scope(Choice):
    """How importances are ranked: across all candidate layers, or within each layer."""

    __what__ = "scope"
    GLOBAL = "global"
    LAYER = "layer"

    @classmethod
    def aliases(cls) -> Mapping[str, str]:
        return {"per_layer": "layer", "layers": "layer", "local": "layer"}


class Level(Choice):
    """Granularity of a diagnostics score: per weight, per output group (neuron / kernel), per input channel."""

    __what__ = "level"
    WEIGHT = "weight"
    GROUP = "group"
    IN_CHANNEL = "in_channel"

    @classmethod
    def aliases(cls) -> Mapping[str, str]:
        return {"groups": "group", "out": "group", "kernel": "group", "neuron": "group", "unit": "group",
                "units": "group", "weights": "weight", "in": "in_channel", "input": "in_channel",
                "in_channels": "in_channel"}


class Kind(Choice):
    """Which trained network a method starts from: the Bayesian network or its deterministic twin."""

    __what__ = "network kind"
    BAYESIAN = "bayesian"
    DETERMINISTIC = "deterministic"

    @classmethod
    def aliases(cls) -> Mapping[str, str]:
        return {"bayes": "bayesian", "bnn": "bayesian", "twin": "deterministic", "plain": "deterministic"}

    @property
    def title(self) -> str:
        """``Bayesian`` / ``deterministic`` as written in prose."""
        return "Bayesian" if self is Kind.BAYESIAN else "deterministic"


class Mode(Choice):
    """Self-compression: delete once, or delete and retrain until nothing is redundant."""

    __what__ = "mode"
    ONESHOT = "oneshot"
    ITERATIVE = "iterative"

    @classmethod
    def aliases(cls) -> Mapping[str, str]:
        return {"one_shot": "oneshot", "once": "oneshot", "iterate": "iterative"}


class Schedule(Choice):
    """Lottery tickets of a study: ``rounds`` rounds to each point, or one trajectory through the grid."""

    __what__ = "schedule"
    PER_POINT = "per_point"
    TRAJECTORY = "trajectory"


class GradualStart(Choice):
    """Where gradual magnitude pruning starts: the trained network (prune while fine-tuning) or its
    initial weights (prune while training from scratch, as Zhu & Gupta)."""

    __what__ = "start"
    TRAINED = "trained"
    INIT = "init"

    @classmethod
    def aliases(cls) -> Mapping[str, str]:
        return {"initial": "init", "scratch": "init", "from_scratch": "init", "finetune": "trained"}


class Reduction(Choice):
    """How a per-weight score becomes one value per group (over all dims but the group's)."""

    __what__ = "reduction"
    MEAN = "mean"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    L2 = "l2"
    L1 = "l1"
    NONE = "none"      # scores defined per group only


#: user-facing spellings of registered scores (see :mod:`pyrocompress.diagnostics.scores`)
SCORE_ALIASES: dict[str, str] = {"norm": "magnitude", "l2": "magnitude", "l2_norm": "magnitude", "l1_norm": "l1"}

#: user-facing spellings of method families (see :mod:`pyrocompress.prune.methods`)
METHOD_ALIASES: dict[str, str] = {"score": "bayes", "selfcompress": "self_compress",
                                  "self_compression": "self_compress", "lottery_ticket": "lottery",
                                  "svd": "sparse_vd", "sparse_variational_dropout": "sparse_vd",
                                  "bc": "bayesian_compression", "bc_horseshoe": "bayesian_compression",
                                  "group_horseshoe": "bayesian_compression"}
