"""One configured training run, Bayesian or deterministic: what the CLI and studies call."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import torch

from .data import DataBundle, load_dataset
from .infer.fit import fit, fit_deterministic, resolve_device
from .infer.guides import make_guide, posterior_mean_network
from .infer.predictive import evaluate, predictive_estimator
from .metrics import parameter_counts
from .nn.model import BayesianModel
from .nn.zoo import build_model
from .runs import RunError, load_run, save_run

__all__ = ["TrainConfig", "TrainedRun", "train"]


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored as ``config.json`` of the run)."""

    dataset: str = "digits"
    data_dir: Optional[str] = None
    val_fraction: float = 0.1
    limit: Optional[int] = None
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=dict)
    deterministic: bool = False
    prior: Any = "normal"
    guide: str = "mean_field"
    init_scale: float = 1e-3
    estimator: str = "local_reparam"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    lr_schedule: Optional[str] = None
    kl_weight: float = 1.0
    kl_anneal_epochs: int = 0
    #: learning rate of the posterior scales (None: fit's default, a multiple of lr)
    scale_lr: Optional[float] = None
    #: a trained run directory whose weights start the network (Bayesian: the guide's means);
    #: its epochs count as pre-training
    init_from: Optional[str] = None
    particles: int = 1
    seed: int = 0
    device: str = "auto"
    patience: Optional[int] = None
    eval_samples: int = 32

    def validate(self) -> "TrainConfig":
        for name in ("epochs", "batch_size", "particles", "eval_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.scale_lr is not None and not (isinstance(self.scale_lr, (int, float)) and self.scale_lr > 0):
            raise ValueError(f"scale_lr must be positive, got {self.scale_lr!r}")
        if not isinstance(self.kl_anneal_epochs, int) or self.kl_anneal_epochs < 0:
            raise ValueError(f"kl_anneal_epochs must be a non-negative integer, got {self.kl_anneal_epochs!r}")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; valid options: {sorted(known)}")
        return cls(**values).validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainedRun:
    config: TrainConfig
    data: DataBundle
    metrics: dict[str, Any]
    history: list[dict]
    model: Optional[BayesianModel] = None
    guide: Any = None
    net: Optional[torch.nn.Module] = None
    path: Optional[Path] = None


def _start_from(arch: torch.nn.Module, run_dir: str) -> int:
    """Load the weights of the trained run ``run_dir`` into ``arch`` (its posterior means for a
    Bayesian run); returns the run's own total training epochs (pre-training of this one)."""
    source = load_run(run_dir)
    net = source.net if not source.is_bayesian else posterior_mean_network(source.model, source.guide)
    own, theirs = arch.state_dict(), net.state_dict()
    if set(own) != set(theirs) or any(own[k].shape != theirs[k].shape for k in own):
        raise RunError(f"init_from: {run_dir} holds another architecture than the one configured "
                       f"(its layers {sorted(theirs)}); train the source with the same model and options")
    arch.load_state_dict(theirs)
    metrics = source.metrics or {}
    return int(metrics.get("total_epochs", metrics.get("epochs", 0)) or 0)


def load_data_for(cfg: TrainConfig) -> DataBundle:
    return load_dataset(cfg.dataset, cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed, limit=cfg.limit)


def train(cfg: TrainConfig, data: Optional[DataBundle] = None, out: Optional[str | Path] = None,
          progress: bool = False) -> TrainedRun:
    """Train the configured network (Bayesian with SVI, or the deterministic twin), evaluate it
    on the test split, and write the run directory ``out`` when given."""
    cfg.validate()
    if data is None:
        data = load_data_for(cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    arch = build_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_options)
    pretrain_epochs = _start_from(arch, cfg.init_from) if cfg.init_from else 0
    start = time.perf_counter()
    config = {"train": cfg.to_dict(),
              "data": {"dataset": cfg.dataset, "data_dir": cfg.data_dir, "val_fraction": cfg.val_fraction,
                       "seed": cfg.seed, "limit": cfg.limit},
              "data_summary": data.describe()}
    if cfg.deterministic:
        net = arch
        save = None
        if out is not None:
            def save(epoch: int) -> None:
                save_run(out, config, net=net)
        result = fit_deterministic(net, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                   optimizer=cfg.optimizer, lr_schedule=cfg.lr_schedule, seed=cfg.seed,
                                   device=device, patience=cfg.patience, checkpoint=save, progress=progress)
        metrics = evaluate(net, data.test)
        counts = parameter_counts(net)
        model = guide = None
    else:
        model = BayesianModel.from_module(arch, data.num_classes, prior=cfg.prior, dataset_size=len(data.train))
        guide = make_guide(model, cfg.guide, init_scale=cfg.init_scale)
        save = None
        if out is not None:
            def save(epoch: int) -> None:
                save_run(out, config, model=model, guide=guide)
        result = fit(model, guide, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                     optimizer=cfg.optimizer, estimator=cfg.estimator, num_particles=cfg.particles,
                     kl_weight=cfg.kl_weight, kl_anneal_epochs=cfg.kl_anneal_epochs, lr_schedule=cfg.lr_schedule,
                     seed=cfg.seed, device=device, patience=cfg.patience, checkpoint=save, progress=progress,
                     scale_lr=cfg.scale_lr)
        metrics = evaluate(model, data.test, guide, num_samples=cfg.eval_samples,
                           estimator=predictive_estimator(cfg.estimator))
        mean_metrics = evaluate(posterior_mean_network(model, guide), data.test)
        metrics.update({f"mean_{k}": v for k, v in mean_metrics.items()})
        counts = parameter_counts(model, guide)
        net = None
    metrics.update({"params": counts["total"]["params"], "nonzero_params": counts["total"]["nonzero"],
                    "seconds": time.perf_counter() - start, "train_seconds": result.seconds,
                    "epochs": result.epochs, "pretrain_epochs": pretrain_epochs,
                    "total_epochs": pretrain_epochs + result.epochs, "steps": result.steps,
                    "stopped_early": result.stopped_early,
                    "kind": "deterministic" if cfg.deterministic else "bayesian", "device": str(device),
                    "params_per_layer": {k: v for k, v in counts.items() if k != "total"}})
    path = None
    if out is not None:
        path = save_run(out, config, model=model, guide=guide, net=net, metrics=metrics, history=result.history)
    return TrainedRun(cfg, data, metrics, result.history, model, guide, net, path)
