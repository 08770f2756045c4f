"""What a front door hands a pruning method: the trained network, the data, how to train, where to report.

A :class:`Context` is built by the command line, a study trial or the Python API from a
trained run; :class:`FitOptions` is the one translation of a run's training options into
the arguments of :func:`~pyrocompress.infer.fit` and
:func:`~pyrocompress.infer.fit_deterministic` for fine-tuning and retraining ("train as the
run was trained", with the front door's overrides). :class:`Progress` receives a method's
stages: the command line evaluates and records them in ``history.csv``, a study ignores them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ...errors import UserError
from ...data import DataBundle
from ...nn.arch import describe
from ...nn.zoo import build_model
from ...runs import Run, RunError, load_checkpoint
from ..baselines import Budget

__all__ = ["Context", "FitOptions", "Progress", "NO_PROGRESS", "initial_network"]

#: the initial weights a study stores beside a trained network (lottery rewinding)
INIT_FILE = "init.safetensors"


@dataclass(frozen=True)
class FitOptions:
    """How fine-tuning and retraining train: the run's own settings, with the front door's overrides."""

    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    lr_schedule: Optional[str] = None
    device: str = "auto"
    estimator: str = "local_reparam"
    kl_weight: float = 1.0
    particles: int = 1
    progress: bool = False  # progress bars (ETA) of every (re)training and of a method's rounds

    @classmethod
    def of(cls, train: Mapping[str, Any], **overrides: Any) -> "FitOptions":
        """From a run's training configuration (``config["train"]``); overrides that are None are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: train[k] for k in known if train.get(k) is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown fit options {unknown}; valid: {sorted(known)}")
        return cls(**values)

    def plain(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of :func:`~pyrocompress.infer.fit_deterministic` (and the baselines' ``fit_options``)."""
        return {"batch_size": self.batch_size, "lr": self.lr, "optimizer": self.optimizer,
                "lr_schedule": self.lr_schedule, "device": self.device, "seed": seed, "progress": self.progress}

    def svi(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of :func:`~pyrocompress.infer.fit` (SVI)."""
        return dict(self.plain(seed), estimator=self.estimator, kl_weight=self.kl_weight,
                    num_particles=self.particles)


class Progress:
    """Receives a method's stages (``dense``, ``pruned``, ``finetuned``) and its own history rows.

    The base class ignores them (what a study needs); the command line's subclass evaluates each
    stage on the validation split and writes the rows to ``history.csv``.
    """

    def stage(self, name: str, *, net: Optional[nn.Module] = None, model: Any = None, guide: Any = None,
              masks: Any = None) -> None:
        """A network at a named stage: plain (``net``) or Bayesian (``model`` + ``guide``, masked by ``masks``)."""

    def rows(self, rows: list[dict]) -> None:
        """Rows the method computed itself (rounds, pruning steps)."""


NO_PROGRESS = Progress()


def initial_network(run: Run, data: DataBundle) -> nn.Module:
    """The run's network at initialisation: the stored ``init.safetensors`` when the run has one (a study's),
    else rebuilt from its seed exactly as ``training.train`` built it (checked against the checkpoint)."""
    train = run.config.get("train", {})
    if "model" not in train:
        raise RunError(f"{run.path} records no model name: the lottery ticket cannot rebuild its initial weights")
    torch.manual_seed(int(train.get("seed", 0)))
    net = build_model(train["model"], data.input_shape, data.num_classes, **dict(train.get("model_options") or {}))
    stored = Path(run.path) / INIT_FILE
    if stored.is_file():
        net.load_state_dict(load_checkpoint(stored)[0])
    elif run.net is not None and describe(net) != describe(run.net):
        raise RunError(f"the network rebuilt from {run.path}'s configuration differs from its checkpoint; the "
                       "lottery ticket needs the run's initial weights")
    return net


@dataclass
class Context:
    """A trained run to prune, its data, the trial's seed and how (re)training runs.

    ``method_seed`` is shared by every operating point of one method on one network (a
    lottery trajectory's rounds); ``grid`` lists those points (compression ratios);
    ``cache_dir`` keeps work shared between trials; ``eval_samples`` are the posterior
    draws of validation checks (self-compression's tolerance).
    """

    run: Run
    data: Optional[DataBundle]   # None: an in-memory network without data (nothing to fine-tune on)
    fit: FitOptions
    seed: int = 0
    eval_samples: int = 16
    method_seed: Optional[int] = None
    grid: tuple[float, ...] = ()
    cache_dir: Optional[Path] = None
    progress: Progress = field(default_factory=Progress)

    @classmethod
    def of_run(cls, run: Run, data: Optional[DataBundle] = None, *, seed: int = 0,
               fit_overrides: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> "Context":
        """A context for ``run`` (its own data unless ``data``), fine-tuning as it was trained."""
        fit = FitOptions.of(run.config.get("train", {}), **dict(fit_overrides or {}))
        return cls(run=run, data=data if data is not None else run.load_data(), fit=fit, seed=seed, **kwargs)

    @property
    def shared_seed(self) -> int:
        """The seed of work shared by every operating point (``method_seed``, else ``seed``)."""
        return self.method_seed if self.method_seed is not None else self.seed

    @property
    def base_epochs(self) -> int:
        """The epochs the run was trained (what a method that starts from it already cost)."""
        train = self.run.config.get("train", {})
        return int(self.run.metrics.get("epochs", train.get("epochs", 0)) or 0)

    @property
    def base_budget(self) -> Budget:
        """The run's training as a :class:`~pyrocompress.prune.baselines.Budget`."""
        return Budget(train_epochs=self.base_epochs,
                      train_seconds=float(self.run.metrics.get("train_seconds", 0.0) or 0.0))

    @property
    def train_epochs_configured(self) -> int:
        """The epochs the run's configuration asks for (a retraining's default length)."""
        train = self.run.config.get("train", {})
        return int(train.get("epochs", self.base_epochs) or self.base_epochs)

    def initial_network(self) -> nn.Module:
        """The run's network at initialisation (see :func:`initial_network`)."""
        return initial_network(self.run, self.data)
