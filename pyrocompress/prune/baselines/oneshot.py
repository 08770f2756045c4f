"""One-shot magnitude and random pruning of a trained plain network, optionally fine-tuned."""
from __future__ import annotations

import copy
import time
from typing import Any, Mapping, Optional, Sequence, Union

from torch import nn

from ...errors import UserError
from ...data import DataBundle
from ...names import Scope, Structure
from ..importance import check_score_fits
from ..targets import Sparsity, as_sparsity
from .budget import Budget
from .common import check_count, check_fit_options, fit_net, prepare, val_metrics, weight_sparsity
from .result import BaselineResult
from .selection import MaskKeeper, masks_for, reached, tolerance, warn_reached

__all__ = ["one_shot", "random_prune", "default_scope"]


def default_scope(structure: Union[Structure, str]) -> Scope:
    """Global ranking for single weights; per layer for units, whose raw norms are not comparable across
    layers of different fan-in (a global ranking by norm would empty the narrow-fan-in layers first)."""
    return Scope.LAYER if Structure.parse(structure).structured else Scope.GLOBAL


def one_shot(net: nn.Module, sparsity: Union[float, Sparsity], *, score: str = "magnitude",
             structure: Union[Structure, str] = Structure.WEIGHT, scope: Optional[Union[Scope, str]] = None,
             seed: int = 0, ignored_layers: Sequence[str] = (),
             layer_sparsity: Optional[Mapping[str, float]] = None, data: Optional[DataBundle] = None,
             finetune_epochs: int = 0, fit_options: Optional[Mapping[str, Any]] = None,
             base_budget: Optional[Budget] = None, inplace: bool = False) -> BaselineResult:
    """One-shot pruning of a trained plain network, optionally followed by fine-tuning.

    ``structure="weight"`` ranks single weights by |w| (or randomly); ``"neuron"`` /
    ``"kernel"`` / ``"unit"`` rank output neurons of hidden Linear layers / kernels of Conv2d
    layers / both by their L2 (``magnitude``, default) or ``l1`` norm, or randomly. The
    sparsity counts weights, or units for a structured ranking. ``scope`` ``"global"`` ranks
    all candidate layers together, ``"layer"`` each on its own; the default is global for
    single weights and per layer for units (:func:`default_scope`). ``base_budget`` is what
    the dense network cost; the result's budget adds the fine-tuning to it.
    """
    structure = Structure.parse(structure)
    score = check_score_fits(score, bayesian=False).name
    scope = Scope.parse(scope) if scope is not None else default_scope(structure)
    sparsity = as_sparsity(sparsity)
    finetune_epochs = check_count(finetune_epochs, "finetune_epochs")
    opts = check_fit_options(fit_options)
    opts.setdefault("seed", seed)
    if finetune_epochs and data is None:
        raise UserError("fine-tuning needs the data: pass data=DataBundle")
    net = prepare(net, inplace, opts.get("device"))
    budget = copy.deepcopy(base_budget) if base_budget is not None else Budget()
    t0 = time.perf_counter()
    masks = masks_for(net, score, structure, scope, sparsity, seed, ignored_layers, layer_sparsity=layer_sparsity)
    masks.apply(net)
    budget.prune_seconds += time.perf_counter() - t0
    got = reached(masks, structure)
    if not layer_sparsity:
        warn_reached(f"{score} {structure.value} pruning", sparsity.value, got, "the policy's safeguards keep units",
                     tolerance(masks, structure))
    row: dict[str, Any] = {"round": 1, "target_sparsity": sparsity.value, "sparsity": got,
                           "weight_sparsity": weight_sparsity(net, masks), "epochs": 0, **val_metrics(net, data)}
    if finetune_epochs:
        res = fit_net(net, data, finetune_epochs, opts, MaskKeeper(masks))
        budget.add_fit(res, "finetune")
        row.update({"epochs": res.epochs, "seconds": res.seconds, **val_metrics(net, data)})
    method = "random" if score == "random" else "magnitude"
    return BaselineResult(method, net, masks, sparsity.value, got, budget, structure.value, scope.value, score, [row],
                          config={"seed": seed, "finetune_epochs": finetune_epochs,
                                  "ignored_layers": list(ignored_layers)})


def random_prune(net: nn.Module, sparsity: Union[float, Sparsity], *,
                 structure: Union[Structure, str] = Structure.WEIGHT, scope: Union[Scope, str] = Scope.GLOBAL,
                 seed: int = 0, **kwargs) -> BaselineResult:
    """Random pruning (the control): :func:`one_shot` with seeded uniform importances."""
    return one_shot(net, sparsity, score="random", structure=structure, scope=scope, seed=seed, **kwargs)
