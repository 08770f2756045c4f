"""Lottery tickets: iterative magnitude pruning with rewinding (Frankle & Carbin 2019).

Prune a rate per round (20% by default, the output layer at half rate), rewind the kept
weights to the initial ones (or to those of an early epoch), retrain, repeat. A schedule
walks several operating points as one trajectory; with a cache directory each round is
trained once and shared (:mod:`.round_cache`).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ...errors import UserError
from ...data import Batches, DataBundle
from ...names import Scope, Structure
from ..importance import importances
from ..masks import Masks
from ..targets import Sparsity, as_sparsity
from .budget import Budget
from .common import (candidates, check_count, check_fit_options, fit_net, output_layer, prepare, prunable_layers,
                     rounds_bar, state_of, val_metrics, weight_sparsity)
from .result import BaselineResult
from .round_cache import RoundCache, tensor_digest
from .schedules import check_schedule, lottery_rates, schedule_plan, weight_share
from .selection import MaskKeeper, select_masks, tolerance, warn_reached

__all__ = ["lottery_ticket"]


def lottery_ticket(net: nn.Module, data: DataBundle, *, sparsity: Optional[Union[float, Sparsity]] = None,
                   rounds: int = 5,
                   rate: float = 0.2, output_rate: Optional[float] = None, train_epochs: int = 10,
                   rewind_epoch: int = 0, scope: Union[Scope, str] = Scope.LAYER, trained_state: Optional[dict] = None,
                   seed: int = 0, ignored_layers: Sequence[str] = (), fit_options: Optional[Mapping[str, Any]] = None,
                   base_budget: Optional[Budget] = None, inplace: bool = False,
                   schedule: Optional[Sequence[float]] = None,
                   cache_dir: Optional[Union[str, Path]] = None) -> BaselineResult:
    """Lottery-ticket iterative magnitude pruning with rewinding (Frankle & Carbin 2019).

    ``net`` is the network *at initialisation*; its weights are stored as ``init``. The
    dense network is trained ``train_epochs`` epochs, or ``trained_state`` is loaded (the
    same network already trained from this init; its cost belongs in ``base_budget``). The
    weights at the end of epoch ``rewind_epoch`` are stored as ``rewind``
    (``rewind_epoch=0``: the init itself). Each round prunes ``rate`` of the remaining
    weights of every layer (the output layer at ``output_rate``, default half the rate;
    ``scope="global"`` ranks the other layers together), rewinds the kept weights to
    ``rewind`` and retrains ``train_epochs - rewind_epoch`` epochs with the pruned weights
    held at zero. With a ``sparsity`` (of all candidate weights) the per-round rate is
    solved so that ``rounds`` rounds reach it exactly. A ``schedule`` (the candidate-weight
    sparsity after each round, increasing) replaces ``sparsity`` / ``rounds`` / ``rate``:
    each round's rate is solved to reach its entry (the output layer keeping its ratio).

    ``cache_dir`` stores every round (trained weights, masks, budget) so that calls whose
    schedules share a prefix, e.g. the lottery tickets of a study's operating points
    ``4x, 8x, 16x`` walked as one trajectory, train each shared round once. The budget of
    the result counts every round the ticket needed, cached or not.
    """
    scope = Scope.parse(scope)
    rounds = check_count(rounds, "rounds")
    train_epochs = check_count(train_epochs, "train_epochs", 1)
    rewind_epoch = check_count(rewind_epoch, "rewind_epoch")
    if rewind_epoch >= train_epochs:
        raise UserError(f"rewind_epoch ({rewind_epoch}) must be smaller than train_epochs ({train_epochs})")
    if schedule is not None:
        schedule = check_schedule(schedule)
        if sparsity is not None and abs(as_sparsity(sparsity).value - schedule[-1]) > 1e-9:
            raise UserError(f"sparsity={sparsity} disagrees with the schedule's last entry {schedule[-1]}; "
                             "give one of them")
        sparsity, rounds = schedule[-1], len(schedule)
    if sparsity is not None:
        sparsity = as_sparsity(sparsity).value
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < float(rate) < 1.0:
        raise UserError(f"rate must lie in (0, 1), got {rate!r}")
    if output_rate is not None and not 0.0 <= float(output_rate) < 1.0:
        raise UserError(f"output_rate must lie in [0, 1), got {output_rate!r}")
    opts = check_fit_options(fit_options)
    opts.setdefault("seed", seed)
    net = prepare(net, inplace, opts.get("device"))
    budget = copy.deepcopy(base_budget) if base_budget is not None else Budget()
    stored: dict[str, dict[str, torch.Tensor]] = {"init": state_of(net)}
    steps_per_epoch = len(Batches(data.train, opts.get("batch_size", 128)))

    def snapshot_at(epoch: int) -> MaskKeeper:
        def take(m: nn.Module, step: int) -> None:
            if step == epoch * steps_per_epoch:
                stored["rewind"] = state_of(m)
        return MaskKeeper(None, on_step=take)

    if trained_state is None:
        res = fit_net(net, data, train_epochs, opts, snapshot_at(rewind_epoch) if rewind_epoch else None)
        budget.add_fit(res, "train")
    else:
        if rewind_epoch:  # replay the first epochs from the init (same seed and data order) to get them
            probe = copy.deepcopy(net)
            res = fit_net(probe, data, rewind_epoch, opts, snapshot_at(rewind_epoch))
            budget.add_fit(res, "train")
            del probe
        net.load_state_dict(trained_state)
    if rewind_epoch == 0:
        stored["rewind"] = stored["init"]
    elif "rewind" not in stored:
        raise RuntimeError(f"training stopped before epoch {rewind_epoch}: no rewind weights were stored")
    chosen = candidates(net, Structure.WEIGHT, ignored_layers)
    out_name = output_layer(net)
    layers = dict(prunable_layers(net))
    sizes = {n: layers[n].weight.numel() for n in chosen}
    ratio = 0.5 if output_rate is None else float(output_rate) / float(rate)
    if schedule is not None:
        plan = schedule_plan(sizes, out_name, schedule, ratio)
        p_hidden, p_out = plan[0]  # the first round's rates (later rounds differ)
    else:
        p_hidden, p_out = lottery_rates(sizes, out_name, sparsity, rounds, float(rate), output_rate)
        plan = [(1.0 - (1.0 - p_hidden) ** r, 1.0 - (1.0 - p_out) ** r) for r in range(1, rounds + 1)]
    history: list[dict] = [{"round": 0, "target_sparsity": 0.0, "sparsity": 0.0, "epochs": budget.train_epochs,
                            **val_metrics(net, data)}]
    masks: Optional[Masks] = None
    cache = None
    start = 0
    rounds_budget = Budget()          # every round so far (cumulative; what the cache stores)
    round_rows: list[dict] = []

    def take(hit) -> None:
        nonlocal masks, rounds_budget, round_rows
        state, masks, cached_budget, cached_rows = hit
        net.load_state_dict({k: v.to(next(net.parameters()).device) for k, v in state.items()})
        rounds_budget = Budget(**{k: v for k, v in cached_budget.items() if k in Budget.__dataclass_fields__})
        round_rows = list(cached_rows)

    if cache_dir is not None and rounds > 0:
        cache = RoundCache(Path(cache_dir), {
            "init": tensor_digest(stored["init"]), "trained": tensor_digest(state_of(net)),
            "rewind": tensor_digest(stored["rewind"]), "seed": seed, "train_epochs": train_epochs,
            "rewind_epoch": rewind_epoch, "scope": scope.value, "ratio": ratio, "ignored": sorted(ignored_layers),
            "fit": {k: v for k, v in opts.items() if k not in ("progress", "device")}})
        for r in range(rounds, 0, -1):
            hit = cache.load(r, plan)
            if hit is not None:
                take(hit)
                start = r
                break
    for r in rounds_bar(range(start + 1, rounds + 1), rounds, "lottery rounds", opts, initial=start):
        if cache is not None:
            hit = cache.claim(r, plan)
            if hit is not None:  # another process trained this round meanwhile
                take(hit)
                continue
        t0 = time.perf_counter()
        s_hidden, s_out = plan[r - 1]
        special = {out_name: s_out} if out_name in sizes else {}
        if scope is Scope.LAYER:
            special = {n: (s_out if n == out_name else s_hidden) for n in chosen}
        scores = importances(net, "magnitude", layers=chosen)
        masks = select_masks(net, scores, s_hidden, structure=Structure.WEIGHT, scope=scope,
                             ignored_layers=ignored_layers,
                             previous=masks, layer_sparsity=special)
        net.load_state_dict(stored["rewind"])
        masks.apply(net)
        rounds_budget.prune_seconds += time.perf_counter() - t0
        try:
            res = fit_net(net, data, train_epochs - rewind_epoch, opts, MaskKeeper(masks))
            rounds_budget.add_fit(res, "finetune")
            round_rows.append({"round": r, "target_sparsity": weight_share(sizes, s_hidden, s_out, out_name),
                               "sparsity": masks.sparsity(), "weight_sparsity": weight_sparsity(net, masks),
                               "epochs": res.epochs, "seconds": res.seconds, **val_metrics(net, data)})
            if cache is not None:
                cache.save(r, plan, net, masks, rounds_budget, round_rows)
        finally:
            if cache is not None:
                cache.release(r)
    for key in ("finetune_epochs", "finetune_seconds", "prune_seconds", "steps"):
        setattr(budget, key, getattr(budget, key) + getattr(rounds_budget, key))
    history.extend(round_rows)
    ticket = None
    if masks is not None:  # the rewound weights under the final masks (the last round may be a cache hit)
        probe = copy.deepcopy(net)
        probe.load_state_dict(stored["rewind"])
        masks.apply(probe)
        ticket = state_of(probe)
        del probe
    if masks is None:
        masks = Masks.ones(net)
        reached, target = 0.0, sparsity if sparsity is not None else 0.0
        warn_reached("lottery ticket", target, 0.0, "rounds=0 prunes nothing")
    else:
        reached = masks.sparsity()
        target = sparsity if sparsity is not None else history[-1]["target_sparsity"]
        warn_reached("lottery ticket", target, reached,
                     f"{rounds} rounds at rate {p_hidden:.4f}, output layer {p_out:.4f}",
                     tolerance(masks, Structure.WEIGHT))
    return BaselineResult("lottery", net, masks, float(target), reached, budget, "weight", scope.value, "magnitude",
                          history, stored=stored, ticket=ticket,
                          config={"rounds": rounds, "rate": p_hidden, "output_rate": p_out,
                                  "train_epochs": train_epochs, "rewind_epoch": rewind_epoch, "seed": seed,
                                  "ignored_layers": list(ignored_layers)})
