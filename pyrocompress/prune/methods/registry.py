"""The method registry: family name -> method class, and the checks every front door shares.

To add a method: write a :class:`~pyrocompress.prune.methods.base.Method` subclass (its
options dataclass, the targets it takes, the networks it can start from, :meth:`run`) in a
module of this package and list it in :data:`METHODS`; the command line, studies and the
Python API then know it (see docs/architecture.md).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ...errors import UserError
from ...names import METHOD_ALIASES, Kind, resolve_alias
from .base import Method
from .bayes import Bayes
from .dense import Dense
from .gradual import Gradual
from .imp import IMP
from .lottery import Lottery
from .magnitude import Magnitude, Random
from .options import option_names
from .selfcompress import SelfCompress
from .sparse import BayesianCompression, SparseVD

__all__ = ["METHODS", "method_names", "method_class", "build_method", "check_method_fits", "method_for_run",
           "UnknownMethodError"]

#: every method family, by name
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Dense, Bayes, SelfCompress, SparseVD, BayesianCompression,
                                                                Magnitude, Random, IMP, Lottery, Gradual)}


class UnknownMethodError(UserError):
    """No method family has this name; ``valid`` lists those that do."""

    def __init__(self, name: str, valid: list[str], what: str = "method") -> None:
        super().__init__(f"unknown {what} {name!r}; valid {what}s: {valid}")
        self.name, self.valid = name, valid


def method_names(references: bool = True) -> list[str]:
    """The registered families (``references=False`` leaves out ``dense``, the study's reference)."""
    return sorted(n for n in METHODS if references or n != Dense.name)


def method_class(name: str, what: str = "method") -> type[Method]:
    """The class of the family ``name`` (or an alias, :data:`pyrocompress.names.METHOD_ALIASES`)."""
    key = resolve_alias(name, METHOD_ALIASES)
    if key not in METHODS:
        raise UnknownMethodError(name, method_names(), what)
    return METHODS[key]


def build_method(name: str, options: Optional[Mapping[str, Any]] = None,
                 train: Optional[Mapping[str, Any]] = None) -> Method:
    """The method ``name`` with its options checked (the edge): see :meth:`Method.build`."""
    return method_class(name).build(options, train)


def check_method_fits(name: str, bayesian: bool) -> str:
    """The family ``name`` if it can start from a Bayesian (``bayesian``) or deterministic run, else an error
    naming the methods that can."""
    cls = method_class(name)
    kind = Kind.BAYESIAN if bayesian else Kind.DETERMINISTIC
    if kind not in cls.starts:
        fitting = [n for n, c in sorted(METHODS.items()) if kind in c.starts and n != Dense.name]
        what = "retrains a deterministic network" if cls.name in ("imp", "lottery", "gradual") else \
            f"starts from a {cls.starts[0].title} network"
        hint = ("; on a Bayesian run use --method magnitude (the posterior mean |mu|) or --method bayes (a posterior "
                "score), or train the deterministic twin with `pyrocompress train --deterministic`" if bayesian else
                "; train a Bayesian run (pyrocompress train without --deterministic) for a posterior")
        raise UserError(f"method {cls.name!r} {what} and does not fit a {kind.title} run; methods that fit it: "
                         f"{fitting}{hint}")
    return cls.name


def method_for_run(name: str, options: Optional[Mapping[str, Any]], bayesian: bool) -> Method:
    """The method ``name`` for a given trained run: it must fit the run's kind, and a family that can start
    from either kind (its ``on`` option) starts from the run's unless told otherwise."""
    cls = method_class(check_method_fits(name, bayesian))
    options = dict(options or {})
    if "on" in option_names(cls.Options):
        options.setdefault("on", Kind.BAYESIAN if bayesian else Kind.DETERMINISTIC)
    return cls.build(options)
