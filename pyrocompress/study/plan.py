"""The plan of a study: every trained network and every trial, with stable ids, seeds and directories.

A study crosses data sets x models x seeds x methods x operating points (:class:`Trial`).
Each trial starts from a trained network (:class:`Network`: a data set, model, seed and
training recipe), trained once into ``runs/<data set>/<model>/seed<k>/<recipe label>``
(``bayesian``, ``deterministic``, or ``<kind>-<hash>`` for a method's own recipe). Every job is
seeded from its identity, never from the order or the worker it runs in.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..names import Kind
from ..prune.methods import Recipe
from .specs import DatasetSpec, MethodSpec, ModelSpec, OperatingPoint, StudyConfig

__all__ = ["Trial", "Network", "plan_trials", "networks_of", "run_dir_of", "seed_of"]


def seed_of(*parts: Any) -> int:
    """A 31-bit seed from the parts of a job's identity."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def run_dir_of(study_dir: Path, dataset: str, model: str, seed: int, label: str) -> Path:
    """Where the network of (data set, model, seed, recipe label) is trained."""
    return Path(study_dir) / "runs" / dataset / model / f"seed{seed}" / label


@dataclass(frozen=True)
class Trial:
    """One cell of the study: a method at an operating point on one trained network."""

    dataset: DatasetSpec
    model: ModelSpec
    seed: int
    method: MethodSpec
    point: Optional[OperatingPoint]

    @property
    def point_label(self) -> str:
        if self.point is not None:
            return self.point.label
        return "1x" if self.method.family == "dense" else "auto"

    @property
    def id(self) -> str:
        return f"{self.dataset.name}__{self.model.label}__s{self.seed}__{self.method.name}__{self.point_label}"

    @property
    def target(self) -> float:
        if self.point is not None:
            return self.point.compression
        return 1.0 if self.method.family == "dense" else float("nan")

    @property
    def network(self) -> "Network":
        return Network(self.dataset, self.model, self.seed, self.method.recipe)


@dataclass(frozen=True)
class Network:
    """A trained network of the study: (data set, model, seed, training recipe)."""

    dataset: DatasetSpec
    model: ModelSpec
    seed: int
    recipe: Recipe

    def run_dir(self, study_dir: Path) -> Path:
        return run_dir_of(study_dir, self.dataset.name, self.model.label, self.seed, self.recipe.label)

    def twin(self) -> "Network":
        """The default deterministic network of the same data set, model and seed (what ``init_from`` reads)."""
        return Network(self.dataset, self.model, self.seed, Recipe(Kind.DETERMINISTIC))

    @property
    def name(self) -> str:
        return f"{self.dataset.name}__{self.model.label}__s{self.seed}__{self.recipe.label}"


def plan_trials(cfg: StudyConfig) -> list[Trial]:
    """Every trial of the study, in a stable order (data set, model, seed, method, point)."""
    out = []
    for d in cfg.datasets:
        for m in cfg.models:
            for s in cfg.seeds:
                for method in cfg.all_methods():
                    for p in cfg.points_of(method):
                        out.append(Trial(d, m, s, method, p))
    return out


def networks_of(trials: list[Trial]) -> list[Network]:
    """The trained networks ``trials`` need, each once, with the deterministic twins the recipes
    that start from one (``init_from``) need, twins first."""
    needed: list[Network] = []
    for t in trials:
        net = t.network
        if net.recipe.init_from:
            needed.append(net.twin())
        needed.append(net)
    unique: list[Network] = []
    for net in needed:
        if net not in unique:
            unique.append(net)
    return sorted(unique, key=lambda n: bool(n.recipe.init_from))
