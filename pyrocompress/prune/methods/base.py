"""A pruning method: one class per family, built from one validated set of options.

Every front door (``pyrocompress prune`` / ``compress``, a study's ``[[methods]]`` table, the
Python :func:`pyrocompress.prune`) builds a :class:`Method` from raw options with
:meth:`Method.build` (the one place they are checked), says which trained network to give it
(:meth:`Method.start`: the Bayesian network or its deterministic twin, with the training
recipe's overrides, :class:`Recipe`), and calls :meth:`Method.run` with a
:class:`~pyrocompress.prune.methods.context.Context` and a
:class:`~pyrocompress.prune.targets.Target`; the result is a :class:`Pruned`.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

from torch import nn

from ...errors import UserError
from ...infer.guides import posterior_mean_network
from ...names import Kind
from ...runs import Run
from ...training import TrainConfig
from ..masks import Masks
from ..targets import AutoThreshold, Target
from .context import Context
from .options import OptionError, options_dict, parse_options

__all__ = ["Method", "Pruned", "Recipe", "TRAIN_KEYS", "check_train_overrides"]

#: TrainConfig fields a method's training recipe may override (the rest define the data and the network)
TRAIN_KEYS = tuple(sorted(set(TrainConfig.__dataclass_fields__) - {
    "dataset", "data_dir", "val_fraction", "limit", "model", "model_options", "seed", "deterministic", "device"}))


def check_train_overrides(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A recipe's training overrides: keys of :data:`TRAIN_KEYS` only (an unknown key names the valid ones)."""
    if not isinstance(values, Mapping):
        raise OptionError(f"the training recipe of {what} must be a table of training options, got {values!r}",
                          "train")
    for key in values:
        if key not in TRAIN_KEYS:
            raise OptionError(f"unknown training option {key!r} for {what}; valid options: {list(TRAIN_KEYS)}", key)
    return dict(values)


@dataclass(frozen=True)
class Recipe:
    """Which trained network a method starts from: its kind and the training options it overrides.

    Methods without overrides share the study's two networks (``label`` ``bayesian`` and
    ``deterministic``); a recipe with overrides gets its own network, labelled by its kind and
    a short hash of the overrides (``bayesian-1f3a9c2e``).
    """

    kind: Kind
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.overrides:
            return self.kind.value
        blob = json.dumps(dict(self.overrides), sort_keys=True, separators=(",", ":"), default=str)
        return f"{self.kind.value}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"

    @property
    def init_from(self) -> Optional[str]:
        """``deterministic``: the guide starts from the trained deterministic twin (pre-training)."""
        return self.overrides.get("init_from")


@dataclass
class Pruned:
    """A pruned network: Bayesian (``model`` + ``guide``) or plain (``net``), masked or physically shrunk.

    ``masks`` are the masks a masked result carries (a front door may shrink it); ``train_epochs``
    replaces the run's training epochs for methods that train from scratch (None: the run's);
    ``finetune_epochs`` counts every fine-tuning and retraining epoch; ``info`` is JSON-ready;
    ``artifacts`` are extra tensors a front door may save (``{file: (tensors, metadata)}``).
    """

    net: Optional[nn.Module] = None
    model: Any = None
    guide: Any = None
    masks: Optional[Masks] = None
    finetune_epochs: int = 0
    train_epochs: Optional[int] = None
    info: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, tuple[dict, dict]] = field(default_factory=dict)

    @property
    def is_bayesian(self) -> bool:
        return self.model is not None

    def deployable(self) -> nn.Module:
        """The plain network one would deploy: the posterior-mean network, or ``net``."""
        if self.is_bayesian:
            return posterior_mean_network(self.model, self.guide)
        return self.net

    def epochs(self, run: Run) -> dict[str, int]:
        """Pre-training, training, fine-tuning/retraining epochs and their sum, for a network from ``run``."""
        if self.train_epochs is not None:
            pretrain, train = 0, int(self.train_epochs)
        else:
            train_cfg = run.config.get("train", {})
            train = int(run.metrics.get("epochs", train_cfg.get("epochs", 0)) or 0)
            pretrain = int(run.metrics.get("pretrain_epochs", 0) or 0)
        finetune = int(self.finetune_epochs)
        return {"pretrain_epochs": pretrain, "train_epochs": train, "finetune_epochs": finetune,
                "epochs": pretrain + train + finetune}


class Method(ABC):
    """A pruning method family (subclasses set the class attributes and :meth:`run`)."""

    #: the family's name (``--method NAME``, ``family = NAME``)
    name: ClassVar[str]
    #: one line for help texts
    description: ClassVar[str]
    #: the options dataclass
    Options: ClassVar[type]
    #: the targets :meth:`run` accepts (``None`` in the tuple: the method may pick its own size)
    targets: ClassVar[tuple] = ()
    #: the kinds of trained network the family can start from (the first is its default)
    starts: ClassVar[tuple[Kind, ...]] = (Kind.DETERMINISTIC,)

    def __init__(self, options: Any, train: Optional[Mapping[str, Any]] = None) -> None:
        self.options = options
        self.train = dict(train or {})

    # ------------------------------------------------------------ building
    @classmethod
    def build(cls, options: Optional[Mapping[str, Any]] = None, train: Optional[Mapping[str, Any]] = None
              ) -> "Method":
        """The method with ``options`` checked and converted (the edge); ``train`` is the recipe's overrides."""
        what = f"method {cls.name!r}"
        return cls(parse_options(cls.Options, options or {}, what), check_train_overrides(train or {}, what))

    def to_dict(self) -> dict[str, Any]:
        """The family and its options (all of them, defaults included), JSON-ready."""
        out: dict[str, Any] = {"family": self.name, "options": options_dict(self.options)}
        if self.train:
            out["train"] = dict(self.train)
        return out

    def __repr__(self) -> str:
        train = f", train={self.train}" if self.train else ""
        return f"{type(self).__name__}({options_dict(self.options)}{train})"

    # ------------------------------------------------------------ what it needs
    def start(self) -> Kind:
        """The kind of trained network this method starts from."""
        return getattr(self.options, "on", None) or self.starts[0]

    def recipe(self) -> Recipe:
        """The trained network (kind and training overrides) this method starts from."""
        return Recipe(self.start(), self.train)

    def uses_grid(self) -> bool:
        """Whether a study runs it at every operating point (else once, at a size it picks itself)."""
        return True

    def default_target(self) -> Optional[Target]:
        """The target when a study gives none (methods that pick their own size)."""
        return AutoThreshold() if None in self.targets else None

    def check_target(self, target: Optional[Target]) -> None:
        """Refuse a target this method cannot reach (before any work is done)."""
        kinds = tuple(t for t in self.targets if t is not None)
        if target is None:
            if None in self.targets:
                return
            flags = " or ".join(f"--{t.flag.replace('_', '-')}" for t in kinds)
            raise UserError(f"--method {self.name} needs {flags} (Python: {', '.join(t.flag + '=' for t in kinds)})")
        if not isinstance(target, kinds):
            flags = ", ".join(f"--{t.flag.replace('_', '-')}" for t in kinds) or "none"
            raise UserError(f"--method {self.name} cannot prune to a {target.describe()}: it takes {flags}")

    # ------------------------------------------------------------ running
    @abstractmethod
    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        """Prune the context's network to ``target``."""
