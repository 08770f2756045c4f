"""A validated study: its data sets, models, seeds, methods, operating points and training settings.

:class:`StudyConfig` is what :func:`pyrocompress.study.config.parse_config` returns. Each
method (:class:`MethodSpec`) holds a built :class:`~pyrocompress.prune.methods.Method`, which
declares the trained network it starts from (:meth:`MethodSpec.recipe`: the Bayesian network
or its deterministic twin, with the method's own training overrides); the study trains each
distinct (data set, model, seed, recipe) once (:meth:`StudyConfig.networks`) and gives each a
dense reference trial.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from ..names import Kind
from ..prune.methods import Method, Recipe, build_method

__all__ = ["DatasetSpec", "ModelSpec", "MethodSpec", "OperatingPoint", "StudyConfig", "TRAIN_SHARED",
           "TRAIN_BAYESIAN", "dense_reference"]

#: training options of both networks ([train], [deterministic], per-model ``train``)
TRAIN_SHARED = ("epochs", "batch_size", "lr", "optimizer", "lr_schedule", "patience", "val_fraction", "limit")
#: training options of the Bayesian network only ([bayesian])
TRAIN_BAYESIAN = ("prior", "guide", "init_scale", "scale_lr", "scale_lr_factor", "estimator", "kl_weight", "kl_anneal_epochs",
                  "particles", "eval_samples")


@dataclass(frozen=True)
class DatasetSpec:
    """One data set of the study and its out-of-distribution set."""

    name: str
    data_dir: Optional[str] = None
    limit: Optional[int] = None
    val_fraction: float = 0.1
    ood: str = "auto"
    download: bool = True

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelSpec:
    """One zoo model with its options and training overrides."""

    name: str
    options: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    label: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "options": self.options, "train": self.train, "label": self.label}


@dataclass(frozen=True)
class MethodSpec:
    """A pruning method of the study: a unique name and the built method (family, options, recipe)."""

    name: str
    method: Method

    @property
    def family(self) -> str:
        return self.method.name

    @property
    def kind(self) -> str:
        """Which trained network it starts from: ``bayesian`` or ``deterministic``."""
        return self.method.start().value

    @property
    def recipe(self) -> Recipe:
        return self.method.recipe()

    @property
    def uses_grid(self) -> bool:
        return self.method.uses_grid()

    def to_dict(self) -> dict:
        return {"name": self.name, **self.method.to_dict()}


def dense_reference(recipe: Recipe) -> MethodSpec:
    """The reference trial of a trained network: ``dense-<recipe label>`` (``dense-bayesian``, ...)."""
    return MethodSpec(f"dense-{recipe.label}", build_method("dense", {"on": recipe.kind}, recipe.overrides))


@dataclass(frozen=True)
class OperatingPoint:
    """A target compression ratio (|w| / |w != 0|); sparsity = 1 - 1/compression."""

    compression: float

    @property
    def sparsity(self) -> float:
        return 1.0 - 1.0 / self.compression

    @property
    def label(self) -> str:
        return f"{self.compression:g}x"


@dataclass
class StudyConfig:
    """A validated study: what to train, how to prune it, where to evaluate."""

    name: str
    datasets: list[DatasetSpec]
    models: list[ModelSpec]
    seeds: list[int]
    methods: list[MethodSpec]
    grid: list[OperatingPoint]
    train: dict = field(default_factory=dict)
    bayesian: dict = field(default_factory=dict)
    deterministic: dict = field(default_factory=dict)
    device: str = "cpu"
    eval_samples: int = 16
    eval_estimator: str = "auto"
    latency_repeats: int = 10
    report_point: Optional[float] = None
    source: str = "<default>"

    # -- identity
    def to_dict(self) -> dict:
        """Everything that determines the results (not where or how fast they are computed: the device is
        recorded per trial, so a study started on the CPU resumes on a GPU and the other way round)."""
        return {
            "name": self.name,
            "datasets": [d.to_dict() for d in self.datasets],
            "models": [m.to_dict() for m in self.models],
            "seeds": list(self.seeds),
            "methods": [m.to_dict() for m in self.methods],
            "grid": [p.compression for p in self.grid],
            "train": self.train,
            "bayesian": self.bayesian,
            "deterministic": self.deterministic,
            "eval_samples": self.eval_samples,
            "eval_estimator": self.eval_estimator,
            "latency_repeats": self.latency_repeats,
            "report_point": self.report_point,
        }

    def config_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of :meth:`to_dict` as canonical JSON (report settings excluded)."""
        values = {k: v for k, v in self.to_dict().items() if k != "report_point"}
        blob = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- what runs
    def recipes(self) -> list[Recipe]:
        """The trained networks every (data set, model, seed) needs: the Bayesian network and its
        deterministic twin, then each distinct recipe of the methods, in order of appearance, and a
        deterministic twin trained for each other total number of epochs a recipe uses (pre-training
        included), so that every method has a dense reference at equal total epochs."""
        out = [Recipe(Kind.BAYESIAN), Recipe(Kind.DETERMINISTIC)]  # the twin is what ``init_from`` starts from
        for m in self.methods:
            if m.recipe not in out:
                out.append(m.recipe)
        twin_epochs = self._epochs(Recipe(Kind.DETERMINISTIC))
        for budget in sorted({self._epochs(r) for r in out if r.overrides} - {twin_epochs}):
            twin = Recipe(Kind.DETERMINISTIC, {"epochs": budget})
            if twin not in out:
                out.append(twin)
        return out

    def _epochs(self, recipe: Recipe) -> int:
        """Total training epochs of a recipe's network (the twin's epochs count when it starts from it).

        Per-model ``[[models]] train`` overrides of the epochs are not looked at (the study-wide values are)."""
        section = self.bayesian if recipe.kind is Kind.BAYESIAN else self.deterministic
        epochs = int(recipe.overrides.get("epochs", section.get("epochs", self.train.get("epochs", 10))))
        if recipe.init_from:
            epochs += int(self.deterministic.get("epochs", self.train.get("epochs", 10)))
        return epochs

    def all_methods(self) -> list[MethodSpec]:
        """The dense reference of every trained network first, then the configured methods."""
        return [dense_reference(r) for r in self.recipes()] + list(self.methods)

    def points_of(self, method: MethodSpec) -> list[Optional[OperatingPoint]]:
        """Operating points a method is run at: the grid, or one point (None) for dense / automatic ones."""
        return list(self.grid) if method.uses_grid else [None]

    def train_config(self, dataset: DatasetSpec, model: ModelSpec, seed: int, recipe: Recipe) -> dict[str, Any]:
        """The :class:`pyrocompress.training.TrainConfig` values of one trained network: the shared
        settings, then the kind's section, the model's overrides and the recipe's overrides."""
        bayesian = recipe.kind is Kind.BAYESIAN
        values: dict[str, Any] = {"dataset": dataset.name, "data_dir": dataset.data_dir, "limit": dataset.limit,
                                  "val_fraction": dataset.val_fraction, "model": model.name,
                                  "model_options": dict(model.options), "seed": int(seed),
                                  "device": self.device, "deterministic": not bayesian,
                                  "eval_samples": self.eval_samples}
        values.update(self.train)
        values.update(self.bayesian if bayesian else self.deterministic)
        values.update({k: v for k, v in model.train.items() if bayesian or k not in TRAIN_BAYESIAN})
        if not bayesian:
            for k in TRAIN_BAYESIAN:
                if k != "eval_samples":
                    values.pop(k, None)
        values.update(recipe.overrides)
        return values
