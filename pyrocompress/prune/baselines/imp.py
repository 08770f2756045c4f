"""Iterative magnitude pruning with fine-tuning (Han et al. 2015)."""
from __future__ import annotations

import copy
import time
from typing import Any, Mapping, Optional, Sequence, Union

from torch import nn

from ...data import DataBundle
from ...names import Scope, Structure
from ..importance import check_score_fits
from ..masks import Masks
from ..targets import Sparsity, as_sparsity
from .budget import Budget
from .common import (check_count, check_fit_options, finetune_list, fit_net, prepare, rounds_bar, val_metrics,
                     weight_sparsity)
from .oneshot import default_scope
from .result import BaselineResult
from .schedules import geometric_schedule
from .selection import MaskKeeper, masks_for, reached, tolerance, warn_reached

__all__ = ["iterative_magnitude"]


def iterative_magnitude(net: nn.Module, data: DataBundle, sparsity: Union[float, Sparsity], *, rounds: int = 5,
                        finetune_epochs: Union[int, Sequence[int]] = 2, score: str = "magnitude",
                        structure: Union[Structure, str] = Structure.WEIGHT,
                        scope: Optional[Union[Scope, str]] = None, seed: int = 0,
                        ignored_layers: Sequence[str] = (), fit_options: Optional[Mapping[str, Any]] = None,
                        base_budget: Optional[Budget] = None, inplace: bool = False) -> BaselineResult:
    """Iterative magnitude pruning with fine-tuning (Han et al. 2015).

    Round r prunes to the cumulative sparsity ``1 - (1 - target)^(r/rounds)`` (the same
    fraction of the remaining weights every round; nested masks), then fine-tunes
    ``finetune_epochs`` epochs (an int, or one per round) with the pruned weights held at
    zero. ``rounds=0`` prunes nothing (and warns).
    """
    structure = Structure.parse(structure)
    score = check_score_fits(score, bayesian=False).name
    scope = Scope.parse(scope) if scope is not None else default_scope(structure)
    sparsity = as_sparsity(sparsity)
    rounds = check_count(rounds, "rounds")
    per_round = finetune_list(finetune_epochs, rounds)
    opts = check_fit_options(fit_options)
    opts.setdefault("seed", seed)
    net = prepare(net, inplace, opts.get("device"))
    budget = copy.deepcopy(base_budget) if base_budget is not None else Budget()
    masks: Optional[Masks] = None
    history: list[dict] = []
    schedule = enumerate(geometric_schedule(sparsity, rounds) if rounds else [], start=1)
    for r, target in rounds_bar(schedule, rounds, "IMP rounds", opts):
        t0 = time.perf_counter()
        masks = masks_for(net, score, structure, scope, target, seed + r, ignored_layers, previous=masks)
        masks.apply(net)
        budget.prune_seconds += time.perf_counter() - t0
        row: dict[str, Any] = {"round": r, "target_sparsity": target, "sparsity": reached(masks, structure),
                               "weight_sparsity": weight_sparsity(net, masks), "epochs": 0}
        if per_round[r - 1]:
            res = fit_net(net, data, per_round[r - 1], opts, MaskKeeper(masks))
            budget.add_fit(res, "finetune")
            row.update({"epochs": res.epochs, "seconds": res.seconds})
        row.update(val_metrics(net, data))
        history.append(row)
    if masks is None:
        masks = Masks.ones(net)
        warn_reached("iterative magnitude pruning", sparsity.value, 0.0, "rounds=0 prunes nothing")
        got = 0.0
    else:
        got = reached(masks, structure)
        warn_reached("iterative magnitude pruning", sparsity.value, got, "the policy's safeguards keep units",
                     tolerance(masks, structure))
    return BaselineResult("imp", net, masks, sparsity.value, got, budget, structure.value, scope.value, score,
                          history, config={"rounds": rounds, "finetune_epochs": per_round, "seed": seed,
                                           "ignored_layers": list(ignored_layers)})
