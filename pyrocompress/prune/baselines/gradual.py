"""Gradual magnitude pruning during training, cubic schedule (Zhu & Gupta 2017), through ``step_hook``."""
from __future__ import annotations

import copy
import time
from typing import Any, Mapping, Optional, Sequence, Union

from torch import nn

from ...errors import UserError
from ...data import Batches, DataBundle
from ...names import Scope, Structure
from ..importance import check_score_fits
from ..masks import Masks
from ..targets import Sparsity, as_sparsity
from .budget import Budget
from .common import check_count, check_fit_options, fit_net, prepare, val_metrics
from .oneshot import default_scope
from .result import BaselineResult
from .schedules import cubic_sparsity
from .selection import MaskKeeper, masks_for, reached, tolerance, warn_reached

__all__ = ["gradual_magnitude"]


def gradual_magnitude(net: nn.Module, data: DataBundle, sparsity: Union[float, Sparsity], *, epochs: int = 10,
                      initial_sparsity: float = 0.0, begin_epoch: float = 0.0, end_epoch: Optional[float] = None,
                      pruning_steps: int = 20, scope: Optional[Union[Scope, str]] = None,
                      structure: Union[Structure, str] = Structure.WEIGHT,
                      score: str = "magnitude", seed: int = 0, ignored_layers: Sequence[str] = (),
                      fit_options: Optional[Mapping[str, Any]] = None, base_budget: Optional[Budget] = None,
                      budget_kind: str = "finetune", inplace: bool = False) -> BaselineResult:
    """Gradual magnitude pruning during training (Zhu & Gupta 2017), through ``step_hook``.

    Trains ``epochs`` epochs; between ``begin_epoch`` and ``end_epoch`` (default 3/4 of the
    training) the masks are recomputed at ``pruning_steps + 1`` evenly spaced optimiser steps
    at the cubic sparsity ``s_f + (s_i - s_f)(1 - progress)^3`` (nested masks), and every
    step holds the pruned weights at zero. ``budget_kind`` says whether these epochs count
    as ``"train"`` (pruning from scratch) or ``"finetune"`` (pruning a trained network). A
    schedule that ends after the training warns with the sparsity it reached.
    """
    structure = Structure.parse(structure)
    score = check_score_fits(score, bayesian=False).name
    scope = Scope.parse(scope) if scope is not None else default_scope(structure)
    sparsity = as_sparsity(sparsity).value
    initial_sparsity = as_sparsity(initial_sparsity).value
    epochs = check_count(epochs, "epochs", 1)
    pruning_steps = check_count(pruning_steps, "pruning_steps", 1)
    if budget_kind not in ("train", "finetune"):
        raise UserError(f"unknown budget_kind {budget_kind!r}; valid: ['train', 'finetune']")
    if initial_sparsity > sparsity:
        raise UserError(f"initial_sparsity ({initial_sparsity}) exceeds the target sparsity ({sparsity})")
    opts = check_fit_options(fit_options)
    opts.setdefault("seed", seed)
    net = prepare(net, inplace, opts.get("device"))
    budget = copy.deepcopy(base_budget) if base_budget is not None else Budget()
    steps_per_epoch = len(Batches(data.train, opts.get("batch_size", 128)))
    total_steps = epochs * steps_per_epoch
    end_epoch = 0.75 * epochs if end_epoch is None else float(end_epoch)
    if not 0.0 <= float(begin_epoch) <= end_epoch:
        raise UserError(f"need 0 <= begin_epoch <= end_epoch, got begin {begin_epoch}, end {end_epoch}")
    t_begin, t_end = int(round(begin_epoch * steps_per_epoch)), int(round(end_epoch * steps_per_epoch))
    prune_at = sorted({t_begin + int(round(i * (t_end - t_begin) / pruning_steps)) for i in range(pruning_steps + 1)})
    history: list[dict] = []

    def prune_to(m: nn.Module, step: int) -> None:
        s = cubic_sparsity(step, t_begin, t_end, sparsity, initial_sparsity)
        keeper.masks = masks_for(m, score, structure, scope, s, seed, ignored_layers, previous=keeper.masks)
        history.append({"step": step, "epoch": step / steps_per_epoch, "target_sparsity": s,
                        "sparsity": reached(keeper.masks, structure)})

    def on_step(m: nn.Module, step: int) -> None:
        if step in prune_set:
            prune_to(m, step)

    keeper = MaskKeeper(None, on_step=on_step)
    prune_set = set(prune_at)
    t0 = time.perf_counter()
    if 0 in prune_set:
        prune_to(net, 0)
        keeper.masks.apply(net)
    budget.prune_seconds += time.perf_counter() - t0
    res = fit_net(net, data, epochs, opts, keeper)
    budget.add_fit(res, budget_kind)
    masks = keeper.masks if keeper.masks is not None else Masks.ones(net)
    got = reached(masks, structure) if keeper.masks is not None else 0.0
    why = (f"the schedule ends at epoch {end_epoch:g}, after the {epochs} training epochs" if t_end > total_steps
           else "the policy's safeguards keep units")
    warn_reached("gradual magnitude pruning", sparsity, got, why, tolerance(masks, structure))
    if history:
        history[-1].update(val_metrics(net, data))
    return BaselineResult("gradual", net, masks, sparsity, got, budget, structure.value, scope.value, score, history,
                          config={"epochs": epochs, "initial_sparsity": initial_sparsity, "begin_epoch": begin_epoch,
                                  "end_epoch": end_epoch, "pruning_steps": pruning_steps, "seed": seed,
                                  "ignored_layers": list(ignored_layers)})
