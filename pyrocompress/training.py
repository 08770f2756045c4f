"""One configured training run, Bayesian or deterministic: what the CLI and studies call.

With an output folder, :func:`train` first checks it (not a file, writable, not the run it
starts from, no other result in it unless ``overwrite``), locks it, and writes the run as it
goes: the best checkpoint so far, and after every epoch ``train_state.safetensors`` (weights,
optimizer and scheduler state, epoch, step, RNG states, history), from which ``resume``
continues an interrupted run exactly where its last epoch ended. ``COMPLETE`` is written last.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ._files import check_output_path, folder_entries, output_folder
from ._memory import check_memory
from .data import DATA_SHAPES, DataBundle, check_same_data, dataset_name, load_dataset
from .errors import DivergenceError, RunError, UserError
from .infer.estimators import ESTIMATORS, resolve_name
from .infer.fit import DEFAULT_SCALE_LR_FACTOR, LR_SCHEDULES, OPTIMIZERS, LoopState, fit, fit_deterministic, resolve_device
from .infer.guides import GUIDES, make_guide, posterior_mean_network
from .infer.moments import is_moment_estimator, moment_options
from .infer.predictive import evaluate, predictive_estimator
from .metrics import parameter_counts
from .nn.model import BayesianModel
from .nn.priors import make_prior
from .nn.zoo import build_model, model_name, model_parameter_count
from .runs import TRAIN_STATE, bayesian_state, check_finite, load_checkpoint, load_run, save_checkpoint, save_run

__all__ = ["TrainConfig", "TrainedRun", "train", "training_memory"]

#: format of train_state.safetensors
STATE_FORMAT = "pyrocompress.train-state/1"
#: options that may differ when a run is resumed (where it runs, how it is finally evaluated, where the
#: data lies: its checksum is checked instead)
RESUMABLE_CHANGES = ("device", "eval_samples", "data_dir")


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
    #: without scale_lr: the scales learn at this multiple of lr (or faster on short runs: fit's travel rule)
    scale_lr_factor: float = DEFAULT_SCALE_LR_FACTOR
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
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise UserError(f"lr must be positive, got {self.lr!r}")
        if self.scale_lr is not None and not (isinstance(self.scale_lr, (int, float)) and self.scale_lr > 0):
            raise UserError(f"scale_lr must be positive, got {self.scale_lr!r}")
        if isinstance(self.scale_lr_factor, bool) or not (isinstance(self.scale_lr_factor, (int, float))
                                                          and 0 < self.scale_lr_factor < math.inf):
            raise UserError(f"scale_lr_factor must be a positive number, got {self.scale_lr_factor!r}")
        if not isinstance(self.kl_anneal_epochs, int) or self.kl_anneal_epochs < 0:
            raise UserError(f"kl_anneal_epochs must be a non-negative integer, got {self.kl_anneal_epochs!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or isinstance(self.patience, bool)
                                          or self.patience < 1):
            raise UserError(f"patience must be a positive integer, got {self.patience!r}")
        _check_prior(self.prior)
        if self.guide not in GUIDES:
            raise UserError(f"unknown guide {self.guide!r}; valid guides: {list(GUIDES)}")
        if is_moment_estimator(self.estimator):
            moment_options(self.estimator)
        elif resolve_name(self.estimator) not in ESTIMATORS:
            raise UserError(f"unknown estimator {self.estimator!r}; valid estimators: {sorted(ESTIMATORS)} or "
                            "moment_propagation[:key=value,...]")
        if str(self.optimizer).lower().replace("-", "_") not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; valid optimizers: {list(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES and self.lr_schedule != "none":
            raise UserError(f"unknown lr_schedule {self.lr_schedule!r}; valid schedules: "
                            f"{[s for s in LR_SCHEDULES if s]}")
        if not isinstance(self.model_options, dict):
            raise UserError(f"model_options must be a mapping of option names to values, got {self.model_options!r}")
        try:
            key = dataset_name(self.dataset)
        except UserError:  # data the caller passes in (from_arrays): checked against its shape in train()
            model_name(self.model)
            return self
        shape, classes = DATA_SHAPES[key]
        count = model_parameter_count(model_name(self.model), shape, classes, **self.model_options)
        check_memory(training_memory(count, self.deterministic),
                     f"training {self.model} with {self.model_options} on {key} ({count:,} parameters)",
                     "choose smaller model options")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown training options {unknown}; valid options: {sorted(known)}")
        return cls(**values).validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_prior(spec: Any) -> None:
    """Build the prior (or every prior of a per-layer mapping) once, so a bad one fails before any work."""
    if isinstance(spec, dict) and "name" not in spec:
        for value in spec.values():
            make_prior(value)
    else:
        try:
            make_prior(spec)
        except TypeError as exc:
            raise UserError(f"prior: {exc}") from None


def training_memory(params: int, deterministic: bool) -> int:
    """Bytes a training of ``params`` float32 parameters holds at least: weights, gradients and Adam's two
    moments, twice over for a Bayesian network (a mean and a scale per weight)."""
    return 4 * params * 4 * (1 if deterministic else 2)


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
    #: the epoch an interrupted run was resumed after (None: trained from the start)
    resumed_after: Optional[int] = None


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


# ----------------------------------------------------------------- resumable state
def _optimizer_to_file(opt: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The optimizer's state dict with its tensors moved into ``tensors`` (JSON-able remainder)."""
    state = {}
    for idx, entries in opt["state"].items():
        state[str(idx)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
                state[str(idx)][key] = {"tensor": f"optim.{idx}.{key}"}
            else:
                state[str(idx)][key] = value
    return {"state": state, "param_groups": opt["param_groups"]}


def _optimizer_from_file(saved: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state = {}
    for idx, entries in saved["state"].items():
        state[int(idx)] = {key: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                           for key, v in entries.items()}
    return {"state": state, "param_groups": saved["param_groups"]}


def _save_state(out: Path, cfg: TrainConfig, data: DataBundle, weights: dict[str, torch.Tensor], loop: LoopState,
                pretrain_epochs: int) -> None:
    """Write ``train_state.safetensors`` atomically: everything ``resume`` needs to continue after ``loop.epoch``."""
    tensors = dict(weights)
    for i, module_state in enumerate(loop.best_state or []):
        tensors.update({f"best.{i}.{k}": v for k, v in module_state.items()})
    tensors["rng.torch"] = loop.rng["torch"]
    for i, s in enumerate(loop.rng.get("cuda") or []):
        tensors[f"rng.cuda.{i}"] = s
    numpy_rng = loop.rng["numpy"]
    meta = {"format": STATE_FORMAT, "train": cfg.to_dict(), "data_sha256": data.checksum, "epoch": loop.epoch,
            "step": loop.step, "history": loop.history, "best_val": loop.best_val if math.isfinite(loop.best_val)
            else None, "bad_epochs": loop.bad_epochs, "best_epoch": loop.best_epoch,
            "best_modules": len(loop.best_state or []), "cuda_states": len(loop.rng.get("cuda") or []),
            "optimizer": _optimizer_to_file(loop.optimizer, tensors), "scheduler": loop.scheduler,
            "python_rng": loop.rng["python"], "numpy_rng": [numpy_rng[0], numpy_rng[1].tolist(), *numpy_rng[2:]],
            "seconds": loop.seconds, "pretrain_epochs": pretrain_epochs}
    save_checkpoint(out / TRAIN_STATE, tensors, meta)


def _differences(saved: dict, now: dict) -> list[str]:
    return [f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in sorted(set(saved) | set(now))
            if k not in RESUMABLE_CHANGES and json.dumps(saved.get(k), sort_keys=True, default=str)
            != json.dumps(now.get(k), sort_keys=True, default=str)]


def _load_state(out: Path, cfg: TrainConfig, data: DataBundle) -> tuple[dict[str, torch.Tensor], LoopState, dict]:
    """Read and check ``train_state.safetensors``: (the weights, the loop's state, the metadata)."""
    tensors, meta = load_checkpoint(out / TRAIN_STATE, finite=False)
    if meta.get("format") != STATE_FORMAT:
        raise RunError(f"{out / TRAIN_STATE} is not a training state of this pyrocompress "
                       f"(format {meta.get('format')!r}); train again with --overwrite")
    diff = _differences(meta.get("train", {}), json.loads(json.dumps(cfg.to_dict(), default=str)))
    if diff:
        raise UserError(f"--resume: {out} was started with other options ({'; '.join(diff[:4])}); give the "
                        "options it was started with, or train it again with --overwrite")
    check_same_data(data, meta.get("data_sha256"), f"the interrupted run {out}")
    n_best = int(meta.get("best_modules", 0))
    best = [{k[len(f"best.{i}."):]: v for k, v in tensors.items() if k.startswith(f"best.{i}.")}
            for i in range(n_best)] or None
    numpy_rng = meta["numpy_rng"]
    rng = {"torch": tensors["rng.torch"], "python": (meta["python_rng"][0], tuple(meta["python_rng"][1]),
                                                     meta["python_rng"][2]),
           "numpy": (numpy_rng[0], np.asarray(numpy_rng[1], dtype=np.uint32), *numpy_rng[2:]),
           "cuda": [tensors[f"rng.cuda.{i}"] for i in range(int(meta.get("cuda_states", 0)))] or None}
    best_val = meta.get("best_val")
    loop = LoopState(epoch=int(meta["epoch"]), step=int(meta["step"]),
                     optimizer=_optimizer_from_file(meta["optimizer"], tensors), scheduler=meta.get("scheduler"),
                     history=list(meta["history"]), best_val=math.inf if best_val is None else float(best_val),
                     bad_epochs=int(meta["bad_epochs"]), best_epoch=int(meta["best_epoch"]), best_state=best,
                     rng=rng, seconds=float(meta.get("seconds", 0.0)))
    weights = {k: v for k, v in tensors.items() if k.startswith(("model.", "guide.", "net."))}
    return weights, loop, meta


def _load_weights(modules: dict[str, torch.nn.Module], weights: dict[str, torch.Tensor], where: Path) -> None:
    for prefix, module in modules.items():
        state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise RunError(f"{where / TRAIN_STATE} does not fit the configured network ({str(exc)[:200]}); "
                           "train again with --overwrite") from None
    check_finite(weights, f"{where / TRAIN_STATE}")


# ----------------------------------------------------------------- training
def train(cfg: TrainConfig, data: Optional[DataBundle] = None, out: Optional[str | Path] = None,
          progress: bool = False, *, resume: bool = False, overwrite: bool = False) -> TrainedRun:
    """Train the configured network (Bayesian with SVI, or the deterministic twin), evaluate it
    on the test split, and write the run directory ``out`` when given.

    ``out`` is checked before anything is loaded and locked while the run is written; a folder
    holding another result is refused unless ``overwrite`` (which deletes it). ``resume``
    continues the unfinished run in ``out`` after its last finished epoch (same options; a folder
    with nothing to resume is trained from the start). The run is marked ``COMPLETE`` last.
    """
    cfg.validate()
    if out is None:
        if resume:
            raise UserError("resume needs the run directory to continue: give out=")
        return _train(cfg, data, None, progress)
    out = check_output_path(out)
    if data is None:
        data = load_data_for(cfg)
    with output_folder(out, "train", overwrite=overwrite, resume=resume,
                       sources=[cfg.init_from] if cfg.init_from else [],
                       resume_hint="continue it with --resume (and the options it was started with)"):
        return _train(cfg, data, out, progress, resume=resume)


def _train(cfg: TrainConfig, data: Optional[DataBundle], out: Optional[Path], progress: bool,
           resume: bool = False) -> TrainedRun:
    if data is None:
        data = load_data_for(cfg)
    device = resolve_device(cfg.device)
    count = model_parameter_count(cfg.model, data.input_shape, data.num_classes, **cfg.model_options)
    check_memory(training_memory(count, cfg.deterministic), f"training {cfg.model} with {cfg.model_options} "
                 f"({count:,} parameters)", "choose smaller model options")
    torch.manual_seed(cfg.seed)
    arch = build_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_options)
    pretrain_epochs = _start_from(arch, cfg.init_from) if cfg.init_from else 0
    start = time.perf_counter()
    config = {"train": cfg.to_dict(),
              "data": {"dataset": cfg.dataset, "data_dir": cfg.data_dir, "val_fraction": cfg.val_fraction,
                       "seed": cfg.seed, "limit": cfg.limit, "source": data.source, "sha256": data.checksum},
              "data_summary": data.describe()}
    state = weights = None
    if resume and out is not None and (out / TRAIN_STATE).is_file():
        weights, state, meta = _load_state(out, cfg, data)
        pretrain_epochs = int(meta.get("pretrain_epochs", pretrain_epochs))
    elif resume and out is not None and [p for p in folder_entries(out) if p.name != "logs"]:
        # an unfinished run that never finished an epoch: nothing to continue, start it again
        for entry in folder_entries(out):
            if entry.is_file():
                entry.unlink()
    if cfg.deterministic:
        net = arch
        modules: dict[str, torch.nn.Module] = {"net.": net}
        model = guide = None
    else:
        model = BayesianModel.from_module(arch, data.num_classes, prior=cfg.prior, dataset_size=len(data.train))
        guide = make_guide(model, cfg.guide, init_scale=cfg.init_scale)
        modules = {"model.": model, "guide.": guide}
        net = None
    if weights is not None:
        _load_weights(modules, weights, out)
    save = save_state = None
    if out is not None:
        def save(epoch: int) -> None:
            save_run(out, config, model=model, guide=guide, net=net, complete=False)

        def save_state(loop: LoopState) -> None:
            current = {f"net.{k}": v for k, v in net.state_dict().items()} if net is not None \
                else bayesian_state(model, guide)
            _save_state(out, cfg, data, current, loop, pretrain_epochs)
    if cfg.deterministic:
        result = fit_deterministic(net, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                   optimizer=cfg.optimizer, lr_schedule=cfg.lr_schedule, seed=cfg.seed,
                                   device=device, patience=cfg.patience, checkpoint=save, progress=progress,
                                   resume=state, on_epoch_end=save_state)
        _check_trained({f"net.{k}": v for k, v in net.state_dict().items()}, cfg)
        metrics = evaluate(net, data.test)
        counts = parameter_counts(net)
    else:
        result = fit(model, guide, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                     optimizer=cfg.optimizer, estimator=cfg.estimator, num_particles=cfg.particles,
                     kl_weight=cfg.kl_weight, kl_anneal_epochs=cfg.kl_anneal_epochs, lr_schedule=cfg.lr_schedule,
                     seed=cfg.seed, device=device, patience=cfg.patience, checkpoint=save, progress=progress,
                     scale_lr=cfg.scale_lr, scale_lr_factor=cfg.scale_lr_factor, resume=state, on_epoch_end=save_state)
        _check_trained(bayesian_state(model, guide), cfg)
        metrics = evaluate(model, data.test, guide, num_samples=cfg.eval_samples,
                           estimator=predictive_estimator(cfg.estimator))
        mean_metrics = evaluate(posterior_mean_network(model, guide), data.test)
        metrics.update({f"mean_{k}": v for k, v in mean_metrics.items()})
        counts = parameter_counts(model, guide)
    earlier = state.seconds if state is not None else 0.0
    metrics.update({"params": counts["total"]["params"], "nonzero_params": counts["total"]["nonzero"],
                    "seconds": earlier + time.perf_counter() - start, "train_seconds": result.seconds,
                    "epochs": result.epochs, "pretrain_epochs": pretrain_epochs,
                    "total_epochs": pretrain_epochs + result.epochs, "steps": result.steps,
                    "stopped_early": result.stopped_early,
                    "kind": "deterministic" if cfg.deterministic else "bayesian", "device": str(device),
                    "params_per_layer": {k: v for k, v in counts.items() if k != "total"}})
    if state is not None:
        metrics["resumed_after_epoch"] = state.epoch
    path = None
    if out is not None:
        path = save_run(out, config, model=model, guide=guide, net=net, metrics=metrics, history=result.history)
        (out / TRAIN_STATE).unlink(missing_ok=True)
    return TrainedRun(cfg, data, metrics, result.history, model, guide, net, path,
                      state.epoch if state is not None else None)


def _check_trained(tensors: dict[str, torch.Tensor], cfg: TrainConfig) -> None:
    """A network whose parameters went NaN or infinite is not a result: say so instead of saving it."""
    try:
        check_finite(tensors, "the trained network")
    except RunError as exc:
        raise DivergenceError(f"{exc} (lr {cfg.lr})") from None
