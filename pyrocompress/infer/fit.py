"""Training: SVI for Bayesian models and the deterministic twin, one loop for both.

:func:`fit` is the one entry point for Bayesian models. With a pyrocompress
:class:`~pyrocompress.infer.MeanFieldGuide` it uses the lean :class:`MeanFieldELBO`
(closed-form KL, local reparameterization by default); with any other guide or an
explicit ``elbo`` (``Trace_ELBO``, ``TraceMeanField_ELBO``, ...) it runs Pyro's ELBO on
the model and guide as they are. Parameters are module-local (Pyro's global parameter
store is never used) and optimised with a torch optimiser, as in Pyro's
``ELBO.__call__(model, guide)`` module interface.

:func:`fit_deterministic` trains the same architecture as a plain network with the same
optimiser, epochs, seed and data order: the deterministic twin of the baselines.
"""
from __future__ import annotations

import copy
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
import pyro
from pyro.infer import ELBO, TraceMeanField_ELBO
from pyro.optim.clipped_adam import ClippedAdam
from tqdm.auto import tqdm

from ..errors import DivergenceError, UserError
from ..data import Batches, DataBundle, DataError, Split
from .._scope import pyro_scope
from ..metrics import classification_metrics
from ..nn.model import BayesianModel
from .elbo import MeanFieldELBO
from .guides import MeanFieldGuide
from .moments import MomentPropagationELBO, is_moment_estimator
from .predictive import network_probs, predictive_estimator, predictive_probs

__all__ = ["fit", "fit_deterministic", "FitResult", "DivergenceError", "resolve_device", "OPTIMIZERS",
           "LR_SCHEDULES", "DEFAULT_SCALE_LR_FACTOR", "default_scale_lr", "PosteriorNotTrainedWarning", "scale_movement_summary",
           "check_scales_moved"]
__all__ += ["LoopState", "rng_state", "set_rng_state"]  # the hooks train --resume uses

OPTIMIZERS = ("adam", "clipped_adam", "sgd")
LR_SCHEDULES = (None, "constant", "cosine", "step", "linear")
#: the posterior scales' learning rate when ``scale_lr`` is not given is the larger of this multiple of
#: ``lr`` and DEFAULT_SCALE_TRAVEL / (number of steps): at Adam's speed limit (about the learning rate
#: per step) the log-scales can then travel DEFAULT_SCALE_TRAVEL (6.5 decades of sigma) in one run, so
#: short runs on small data sets converge too (chosen by measurement: docs/results.md)
DEFAULT_SCALE_LR_FACTOR = 10.0
DEFAULT_SCALE_TRAVEL = 15.0
#: the travel rule never sets a scale learning rate above this (a 5% change of sigma per step)
MAX_DEFAULT_SCALE_LR = 0.05


def default_scale_lr(lr: float, steps: int, factor: float = DEFAULT_SCALE_LR_FACTOR) -> float:
    """The default learning rate of the posterior scales for a run of ``steps`` optimiser steps:
    the larger of ``factor * lr`` and the travel rule (short runs still cross the decades)."""
    travel = min(DEFAULT_SCALE_TRAVEL / max(int(steps), 1), MAX_DEFAULT_SCALE_LR)
    return max(float(factor) * float(lr), travel)


_VAL_SEED_OFFSET = 7919  # validation's random stream: seed + this, in every epoch
#: a scale within this factor of its initial value counts as not moved
_UNMOVED_FACTOR = 2.0
#: scales moving this share of the optimiser's speed limit in the last epoch have not converged
_RACING_SPEED = 0.5


class PosteriorNotTrainedWarning(UserWarning):
    """Most posterior scales are still at their initial value: scores built on them read the initialisation."""


@torch.no_grad()
def scale_movement_summary(guide) -> dict[str, float]:
    """How far the posterior scales moved from their start: median and 90th percentile of
    |log(scale / initial scale)|, the fraction still within a factor 2 of the start, and the
    smallest and largest log-change. Deleted weights (scale at its masked floor) are left out."""
    if not hasattr(guide, "scale_movement"):
        return {}
    moves = []
    for move in guide.scale_movement().values():
        moves.append(move[~torch.isnan(move)].flatten())
    moves_t = torch.cat(moves).double() if moves else torch.zeros(0, dtype=torch.float64)
    if moves_t.numel() == 0:
        return {}
    mag = moves_t.abs()
    return {"scale_move_median": float(mag.median()), "scale_move_p90": float(torch.quantile(mag, 0.9)),
            "scale_unmoved_fraction": float((mag < math.log(_UNMOVED_FACTOR)).double().mean()),
            "scale_move_min": float(moves_t.min()), "scale_move_max": float(moves_t.max())}


def check_scales_moved(guide, context: str, stacklevel: int = 2) -> Optional[str]:
    """Warn (and return the message) when most posterior scales are still within a factor 2 of their
    initial value: the posterior is not trained, and SNR / HDI / log-alpha scores and automatic
    thresholds would read the initialisation."""
    summary = scale_movement_summary(guide)
    if not summary or summary["scale_unmoved_fraction"] <= 0.5:
        return None
    message = (f"{context}: {100 * summary['scale_unmoved_fraction']:.0f}% of the posterior scales are still within a "
               f"factor {_UNMOVED_FACTOR:g} of their initial value {guide.init_scale:g} (median change "
               f"{summary['scale_move_median']:.2f} in log scale): the posterior is not trained, and scores built on "
               "the scales read the initialisation. Train longer, raise the scales' learning rate (--scale-lr) or "
               "start from a larger --init-scale.")
    warnings.warn(message, PosteriorNotTrainedWarning, stacklevel=stacklevel + 1)
    return message


@dataclass
class FitResult:
    """What a training run did: per-epoch history, time, and how it ended."""

    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    epochs: int = 0
    steps: int = 0
    best_epoch: int = 0
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; any torch device string otherwise."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but CUDA is not available here; use --device auto or cpu")
    return dev


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UserError(f"{name} must be a positive number, got {value!r}")


def make_optimizer(name: str, params, lr: float, clip_norm: Optional[float]) -> torch.optim.Optimizer:
    """An optimiser over ``params`` (a list of tensors, or of param-group dicts with their own ``lr``)."""
    key = str(name).lower().replace("-", "_")
    if key == "adam":
        # the fused kernel (one pass over all parameters) is ~10% faster per SVI step on CPU
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.Adam(params, lr=lr)
    if key == "clipped_adam":
        return ClippedAdam(params, lr=lr, clip_norm=clip_norm or 10.0)
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise UserError(f"unknown optimizer {name!r}; valid optimizers: {list(OPTIMIZERS)}")


def _make_schedule(name: Optional[str], optimizer, epochs: int):
    if name in (None, "constant", "none"):
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(epochs // 3, 1), gamma=0.3)
    if name == "linear":  # to zero at the end of training (Molchanov et al. 2017)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.0, 1.0 - e / max(epochs, 1)))
    raise UserError(f"unknown lr_schedule {name!r}; valid schedules: {[s for s in LR_SCHEDULES if s]}")


def _check_data(data: DataBundle, input_shape_of: Callable[[torch.Tensor], None]) -> None:
    if not isinstance(data, DataBundle):
        raise TypeError("data must be a DataBundle (see pyrocompress.data.load_dataset / from_arrays)")
    if len(data.train) == 0:
        raise DataError("the training split is empty")
    input_shape_of(data.train.x[:2])


def _probe(forward: Callable, what: str) -> Callable[[torch.Tensor], None]:
    def check(x: torch.Tensor) -> None:
        try:
            with torch.no_grad():
                forward(x)
        except RuntimeError as exc:
            raise DataError(f"data of shape {tuple(x.shape[1:])} does not fit the {what}: {exc}") from None
    return check


def _snapshot(modules: list[nn.Module]) -> list[dict]:
    return [copy.deepcopy(m.state_dict()) for m in modules]


def _restore(modules: list[nn.Module], states: list[dict]) -> None:
    for m, s in zip(modules, states):
        m.load_state_dict(s)


@dataclass
class LoopState:
    """Where a training loop stands at the end of an epoch: what it needs to continue exactly as if it had
    not stopped (``train --resume``). The weights are not part of it: the caller saves and restores them
    before calling :func:`fit` again, which then continues at ``epoch + 1``."""

    epoch: int
    step: int
    optimizer: dict
    scheduler: Optional[dict]
    history: list[dict]
    best_val: float
    bad_epochs: int
    best_epoch: int
    best_state: Optional[list[dict]]
    rng: dict
    seconds: float


def rng_state() -> dict:
    """The global random states training draws from: torch (CPU and CUDA), Python, NumPy."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _train_loop(*, modules: list[nn.Module], params: list[torch.Tensor], step_terms: Callable, evaluate_val: Callable,
                data: DataBundle, epochs: int, batch_size: int, lr: float, optimizer: str, lr_schedule,
                seed: int, patience: Optional[int], clip_norm: Optional[float], progress: bool,
                kl_weight_at: Callable[[int], float], on_checkpoint: Optional[Callable[[int], None]],
                desc: str, device: torch.device, after_step: Optional[Callable[[], None]] = None,
                epoch_extras: Optional[Callable[[int, list[float]], dict]] = None,
                resume: Optional[LoopState] = None,
                on_epoch_end: Optional[Callable[[LoopState], None]] = None) -> FitResult:
    opt = make_optimizer(optimizer, params, lr, clip_norm)
    tensors = [p for group in params for p in group["params"]] if params and isinstance(params[0], dict) else params
    sched = _make_schedule(lr_schedule, opt, epochs)
    batches = Batches(data.train, batch_size, shuffle=True, seed=seed)
    result = FitResult()
    best_val, best_state, bad_epochs = math.inf, None, 0
    check_every = 1 if device.type == "cpu" else 50
    start = time.perf_counter()
    step, first_epoch, earlier_seconds = 0, 1, 0.0
    if resume is not None:  # continue where an interrupted run's last epoch ended
        opt.load_state_dict(resume.optimizer)
        if sched is not None and resume.scheduler is not None:
            sched.load_state_dict(resume.scheduler)
        step, first_epoch, earlier_seconds = resume.step, resume.epoch + 1, resume.seconds
        batches.epoch = resume.epoch
        result.history, result.epochs, result.best_epoch = list(resume.history), resume.epoch, resume.best_epoch
        best_val, bad_epochs, best_state = resume.best_val, resume.bad_epochs, resume.best_state
        set_rng_state(resume.rng)
    bar = tqdm(total=epochs * len(batches), initial=(first_epoch - 1) * len(batches), desc=desc,
               disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for epoch in range(first_epoch, epochs + 1):
            good_state = _snapshot(modules)
            kl_w = kl_weight_at(epoch)
            t0 = time.perf_counter()
            sums = {"loss": 0.0, "nll": 0.0, "kl": 0.0}
            # the epoch's NLL sum and last KL stay on the device (float64: the same sums a per-step read gave);
            # they are read once per epoch, so a GPU never waits for them
            nll_sum: Optional[torch.Tensor] = None
            kl_last: Optional[torch.Tensor] = None
            correct = seen = 0
            pending: list[torch.Tensor] = []
            for xb, yb in batches:
                step += 1
                opt.zero_grad(set_to_none=True)
                loss, terms, logits = step_terms(xb, yb, kl_w)
                loss.backward()
                if clip_norm is not None and optimizer != "clipped_adam":
                    torch.nn.utils.clip_grad_norm_(tensors, clip_norm)
                pending.append(loss.detach())
                if step % check_every == 0:
                    value = float(torch.stack(pending).sum()) if len(pending) > 1 else float(pending[0])
                    pending.clear()
                    if not math.isfinite(value):
                        bad = [k for k, v in terms.items() if v is not None and not bool(torch.isfinite(v))]
                        _restore(modules, good_state)
                        where = f"step {step} (epoch {epoch})"
                        saved = ""
                        if on_checkpoint is not None:
                            on_checkpoint(epoch - 1)
                            saved = " and saved as the checkpoint"
                        raise DivergenceError(
                            f"the objective diverged at {where}: the {' and '.join(bad) or 'loss'} term is "
                            f"{value}; the last good state (end of epoch {epoch - 1}) was restored{saved}. "
                            f"Lower the learning rate (now {lr}), use optimizer='clipped_adam' or set clip_norm.")
                    sums["loss"] += value
                opt.step()
                if after_step is not None:
                    after_step()
                if terms.get("nll") is not None:
                    nll = terms["nll"].detach().to(torch.float64)
                    nll_sum = nll if nll_sum is None else nll_sum + nll
                if terms.get("kl") is not None:
                    kl_last = terms["kl"].detach()
                if progress and logits is not None and step % 20 == 0:
                    sums["kl"] = float(kl_last) if kl_last is not None else 0.0  # the bar's value: a read per 20 steps
                    correct += int((logits.argmax(-1) == yb).sum())
                    seen += yb.shape[0]
                    bar.set_postfix(loss=f"{sums['loss'] / max(step - (epoch - 1) * len(batches), 1):.4g}",
                                    kl=f"{sums['kl']:.4g}", acc=f"{correct / max(seen, 1):.3f}")
                bar.update(1)
            if pending:
                sums["loss"] += float(torch.stack(pending).sum())
            sums["nll"] = float(nll_sum) if nll_sum is not None else 0.0
            sums["kl"] = float(kl_last) if kl_last is not None else 0.0
            n_steps = len(batches)
            lrs = [float(group["lr"]) for group in opt.param_groups]  # the rates this epoch ran with
            if sched is not None:
                sched.step()
            record = {"epoch": epoch, "loss": sums["loss"] / n_steps, "nll": sums["nll"] / n_steps,
                      "kl": sums["kl"], "kl_weight": kl_w, "lr": lrs[0],
                      "seconds": time.perf_counter() - t0}
            if epoch_extras is not None:
                record.update(epoch_extras(n_steps, lrs))
            if len(data.val) > 0:
                t_val = time.perf_counter()
                val = evaluate_val(data.val)
                val_seconds = time.perf_counter() - t_val
                record.update({"val_accuracy": val["accuracy"], "val_nll": val["nll"], "val_seconds": val_seconds,
                               "val_share": val_seconds / max(record["seconds"] + val_seconds, 1e-12)})
                if "samples" in val:
                    record["val_samples"] = val["samples"]
            result.history.append(record)
            result.epochs = epoch
            current = record.get("val_nll", -epoch)
            if current < best_val:
                best_val, bad_epochs, result.best_epoch = current, 0, epoch
                if patience is not None:
                    best_state = _snapshot(modules)
                if on_checkpoint is not None:
                    on_checkpoint(epoch)
            else:
                bad_epochs += 1
                if patience is not None and bad_epochs >= patience:
                    result.stopped_early = True
                    break
            if on_epoch_end is not None:
                on_epoch_end(LoopState(epoch, step, opt.state_dict(), sched.state_dict() if sched is not None else None,
                                       result.history, best_val, bad_epochs, result.best_epoch, best_state,
                                       rng_state(), earlier_seconds + time.perf_counter() - start))
    finally:
        bar.close()
    if best_state is not None and result.best_epoch != result.epochs:
        _restore(modules, best_state)
    result.steps = step
    result.seconds = earlier_seconds + time.perf_counter() - start
    return result


def _kl_schedule(kl_weight: float, anneal_epochs: int) -> Callable[[int], float]:
    if anneal_epochs <= 0:
        return lambda epoch: kl_weight
    return lambda epoch: kl_weight * min(1.0, epoch / float(anneal_epochs))


def fit(model: BayesianModel, guide, data: DataBundle, *, epochs: int = 10, batch_size: int = 128,
        lr: float = 1e-3, optimizer: str = "adam", estimator: str = "local_reparam", elbo: Optional[ELBO] = None,
        num_particles: int = 1, kl_weight: float = 1.0, kl_anneal_epochs: int = 0,
        lr_schedule: Optional[str] = None, seed: int = 0, device: str | torch.device = "auto",
        patience: Optional[int] = None, clip_norm: Optional[float] = None, val_samples: int = 4,
        checkpoint: Optional[Callable[[int], None]] = None, progress: bool = False,
        validate_args: bool = False, step_hook: Optional[Callable] = None,
        scale_lr: Optional[float] = None, scale_lr_factor: float = DEFAULT_SCALE_LR_FACTOR,
        resume: Optional[LoopState] = None,
        on_epoch_end: Optional[Callable[[LoopState], None]] = None) -> FitResult:
    """Train a Bayesian model with SVI and return what happened.

    ``scale_lr`` is the learning rate of the posterior scales of a pyrocompress guide
    (default :func:`default_scale_lr` with ``scale_lr_factor``): Adam moves a parameter by about its learning
    rate per step, and the scales (log-parametrised) must cross decades, the locations only
    move by about the weights' size. Every epoch's history row records the NLL and KL parts,
    their ratio, and how far the scales moved from their start (``scale_move_median``,
    ``scale_unmoved_fraction``, ...); when most scales are still within a factor 2 of their
    start at the end, a :class:`PosteriorNotTrainedWarning` says so.

    ``estimator`` picks how the lean ELBO samples (``local_reparam``, ``flipout``,
    ``weight_sampling``; ``moment_propagation[:relu=taylor,pool=argmax,...]``, see
    :func:`~pyrocompress.infer.moments.moment_options`) and applies to
    pyrocompress guides; pass ``elbo`` (any ``pyro.infer.ELBO``) to use Pyro's own
    estimators, which any guide (autoguides included) supports. ``kl_weight`` and
    ``kl_anneal_epochs`` (linear warm-up) weight the KL term. ``patience`` enables early
    stopping on validation NLL (the best state is restored). ``checkpoint(epoch)`` is
    called when the validation NLL improves and on divergence with the last good state.
    Pyro's argument validation is off unless ``validate_args`` (it costs ms per step).
    ``step_hook(model, guide)`` runs after every optimiser step (pruning masks use it).

    Validation (every epoch, on ``data.val``) is the posterior predictive with ``val_samples``
    samples (the estimator :func:`~pyrocompress.infer.predictive.predictive_estimator` picks),
    drawn from a random stream of its own that is the same in every epoch: epochs are compared
    on common random numbers, and training draws the same noise whatever the validation costs.
    Its cost is ``val_samples`` forward passes over the validation split; the default of 4 keeps
    it near 10% of a weight-sampling epoch of kernelnet on Fashion-MNIST (8 samples: 20%, see
    docs/performance.md). ``history`` records ``val_seconds``, ``val_share`` (of the epoch, training
    plus validation) and ``val_samples``.

    ``on_epoch_end(state)`` receives the loop's :class:`LoopState` after every epoch; ``resume``
    (such a state, with the model and guide already holding that epoch's weights) continues
    the run at the next epoch as if it had never stopped.
    """
    if not isinstance(model, BayesianModel):
        raise TypeError("fit() trains a pyrocompress BayesianModel; use fit_deterministic() for plain networks")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise UserError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    _check_positive(lr=lr, clip_norm=clip_norm, scale_lr=scale_lr, scale_lr_factor=scale_lr_factor)
    if isinstance(val_samples, bool) or not isinstance(val_samples, int) or val_samples <= 0:
        raise UserError(f"val_samples must be a positive integer, got {val_samples!r}")
    if not (isinstance(kl_weight, (int, float)) and kl_weight >= 0 and math.isfinite(kl_weight)):
        raise UserError(f"kl_weight must be a non-negative number, got {kl_weight!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise UserError(f"patience must be a positive integer or None, got {patience!r}")
    dev = resolve_device(device)
    model.to(dev)
    lean = elbo is None and isinstance(guide, MeanFieldGuide)
    if lean:
        guide.check_belongs_to(model)
        if is_moment_estimator(estimator):
            elbo = MomentPropagationELBO.from_name(estimator, num_particles=num_particles, kl_weight=kl_weight)
        else:
            elbo = MeanFieldELBO(estimator=estimator, num_particles=num_particles, kl_weight=kl_weight)
    elif elbo is None:
        elbo = TraceMeanField_ELBO(num_particles=num_particles)
    elif not isinstance(elbo, ELBO):
        raise TypeError(f"elbo must be a pyro.infer.ELBO, got {type(elbo).__name__}")
    if kl_anneal_epochs and not hasattr(elbo, "loss_terms"):
        raise UserError("KL annealing needs the lean MeanFieldELBO (a pyrocompress guide and no explicit elbo)")
    if guide is None:
        raise UserError("fit() needs a guide: make_guide(model) or any Pyro autoguide")
    if isinstance(guide, nn.Module):
        guide.to(dev)
    data = data.to(dev)
    model.likelihood.dataset_size = len(data.train)
    # the shapes are checked on the deterministic template: sampling the model's own sites would need a
    # proper prior (the log-uniform prior has no samples)
    _check_data(data, _probe(model.architecture.to(dev) if model.architecture is not None else model.net, "model"))
    if data.num_classes != model.likelihood.num_classes:
        raise DataError(f"the data has {data.num_classes} classes, the model's likelihood {model.likelihood.num_classes}")

    with pyro_scope(validate_args):
        pyro.set_rng_seed(seed)
        if not lean:
            elbo.differentiable_loss(model, guide, data.train.x[:2], data.train.y[:2])  # create lazy params
        modules = [m for m in (model, guide) if isinstance(m, nn.Module)]
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if not params:
            raise UserError("the model and guide have no trainable parameters")
        groups: list = params
        epoch_extras = None
        if hasattr(guide, "scale_parameters"):
            scale_ids = {id(p) for p in guide.scale_parameters()}
            rest = [p for p in params if id(p) not in scale_ids]
            scale_params = [p for p in params if id(p) in scale_ids]
            steps = epochs * math.ceil(len(data.train) / batch_size)
            slr = float(scale_lr) if scale_lr is not None else default_scale_lr(lr, steps, scale_lr_factor)
            groups = [g for g in ({"params": rest, "lr": lr}, {"params": scale_params, "lr": slr}) if g["params"]]

            previous = {k: v.clone() for k, v in guide.scale_movement().items()}

            def epoch_extras(steps: int, lrs: list[float]) -> dict:
                # how far the scales moved this epoch against the most Adam could move them
                # (about scale_lr per step): near 1 means they are still racing, not converged
                current = guide.scale_movement()
                moved = torch.cat([(current[k] - previous[k]).abs().flatten() for k in current])
                moved = moved[~torch.isnan(moved)]
                for k, v in current.items():
                    previous[k] = v.clone()
                summary = scale_movement_summary(guide)
                limit = steps * lrs[-1]
                if moved.numel() and limit > 0:
                    summary["scale_lr"] = lrs[-1]
                    summary["scale_speed"] = float(moved.median()) / limit
                return summary

        val_estimator = predictive_estimator(estimator) if lean else "local_reparam"
        if hasattr(elbo, "loss_terms"):
            def step_terms(xb, yb, kl_w):
                nll, kl, logits = elbo.loss_terms(model, guide, xb, yb, return_logits=True)
                return nll + kl_w * kl, {"nll": nll, "kl": kl}, logits
        else:
            def step_terms(xb, yb, kl_w):
                return elbo.differentiable_loss(model, guide, xb, yb), {"loss": None}, None

        def evaluate_val(split: Split) -> dict:
            # validation draws from its own random stream, the same in every epoch: epochs are compared
            # on common random numbers (less Monte Carlo noise in early stopping), and training draws
            # the same noise whatever the validation policy
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                torch.manual_seed(seed + _VAL_SEED_OFFSET)
                probs = predictive_probs(model, guide, split.x, num_samples=val_samples, estimator=val_estimator)
            return dict(classification_metrics(probs, split.y), samples=val_samples)

        result = _train_loop(modules=modules, params=groups, step_terms=step_terms, evaluate_val=evaluate_val,
                             data=data, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                             lr_schedule=lr_schedule, seed=seed, patience=patience, clip_norm=clip_norm,
                             progress=progress, kl_weight_at=_kl_schedule(float(kl_weight), int(kl_anneal_epochs)),
                             on_checkpoint=checkpoint, desc="SVI", device=dev,
                             after_step=(lambda: step_hook(model, guide)) if step_hook is not None else None,
                             epoch_extras=epoch_extras, resume=resume, on_epoch_end=on_epoch_end)
    for row in result.history:
        if row.get("nll"):
            row["kl_nll_ratio"] = row["kl"] / row["nll"]
    if hasattr(guide, "scale_movement"):
        if check_scales_moved(guide, "fit", stacklevel=2) is None and result.history:
            speed = result.history[-1].get("scale_speed")
            if speed is not None and speed > _RACING_SPEED:
                warnings.warn(f"fit: in the last epoch the posterior scales still moved {100 * speed:.0f}% of the "
                              "most the optimiser allows (about scale_lr per step): they have not converged, and "
                              "scores built on them read where the optimiser got to, not the posterior. Train longer "
                              "or raise scale_lr.", PosteriorNotTrainedWarning, stacklevel=2)
    return result


def fit_deterministic(net: nn.Module, data: DataBundle, *, epochs: int = 10, batch_size: int = 128,
                      lr: float = 1e-3, optimizer: str = "adam", lr_schedule: Optional[str] = None, seed: int = 0,
                      device: str | torch.device = "auto", patience: Optional[int] = None,
                      clip_norm: Optional[float] = None, weight_decay: float = 0.0,
                      checkpoint: Optional[Callable[[int], None]] = None, progress: bool = False,
                      step_hook: Optional[Callable[[nn.Module], None]] = None, resume: Optional[LoopState] = None,
                      on_epoch_end: Optional[Callable[[LoopState], None]] = None) -> FitResult:
    """Train a plain network with cross-entropy: same optimiser, seed and data order as :func:`fit`.

    ``step_hook(net)`` runs after every optimiser step (pruning masks use it to keep
    pruned weights at zero during fine-tuning). ``on_epoch_end`` / ``resume``: as in :func:`fit`.
    """
    if isinstance(net, BayesianModel):
        raise TypeError("fit_deterministic() trains plain networks; use fit() for a BayesianModel")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise UserError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    _check_positive(lr=lr, clip_norm=clip_norm)
    dev = resolve_device(device)
    net.to(dev)
    data = data.to(dev)
    _check_data(data, _probe(net, "network"))
    with torch.no_grad():
        out = net(data.train.x[:2])
    if out.shape[-1] != data.num_classes:
        raise DataError(f"the network has {out.shape[-1]} outputs, the data {data.num_classes} classes")
    torch.manual_seed(seed)
    params = [p for p in net.parameters() if p.requires_grad]

    def step_terms(xb, yb, _):
        logits = net(xb)
        loss = F.cross_entropy(logits, yb)
        if weight_decay:
            loss = loss + 0.5 * weight_decay * sum((p * p).sum() for p in params)
        return loss, {"nll": loss}, logits

    def evaluate_val(split: Split) -> dict:
        return classification_metrics(network_probs(net, split.x), split.y)

    result = _train_loop(modules=[net], params=params, step_terms=step_terms, evaluate_val=evaluate_val, data=data,
                         epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, lr_schedule=lr_schedule,
                         seed=seed, patience=patience, clip_norm=clip_norm, progress=progress,
                         kl_weight_at=lambda e: 0.0, on_checkpoint=checkpoint, desc="train", device=dev,
                         after_step=(lambda: step_hook(net)) if step_hook is not None else None, resume=resume,
                         on_epoch_end=on_epoch_end)
    return result
