"""What the methods on the deterministic twin share: reaching a target, budgets, and their result.

A baseline of :mod:`pyrocompress.prune.baselines` is called with a sparsity; a compression
target becomes a weight sparsity (unstructured) or a search over the unit sparsity of the
shrunk network (structured); ``budget_epochs`` spreads a total epoch budget over the method's
phases (:func:`~pyrocompress.prune.baselines.allocate_budget`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch import nn

from ...names import Scope, Structure
from ..baselines import BaselineResult, allocate_budget, default_scope
from ..shrink import shrink
from ..targets import Compression, Sparsity, Target, search_unit_sparsity, total_params, weight_sparsity_for
from .base import Pruned
from .context import Context

__all__ = ["at_target", "budget_options", "baseline_pruned", "run_plain", "scope_for"]


def budget_options(method: str, budget_epochs: Optional[int], base_epochs: int, rounds: int = 1,
                   rewind_epoch: int = 0) -> dict[str, Any]:
    """The keyword arguments that make ``method`` use ``budget_epochs`` in all (none without a budget)."""
    if budget_epochs is None:
        return {}
    return allocate_budget(method, budget_epochs, base_epochs, rounds, rewind_epoch)


def at_target(net: nn.Module, target: Target, structure: Structure,
              call: Callable[[Optional[Sparsity]], BaselineResult]) -> tuple[BaselineResult, Optional[nn.Module], dict]:
    """Run a baseline to ``target``: ``(result, shrunk network or None, search info)``.

    A sparsity goes to ``call`` as it is; a compression ratio becomes the weight sparsity that
    reaches it (unstructured, the result stays masked) or the unit sparsity whose shrunk network
    reaches it (structured: the result comes back shrunk).
    """
    if isinstance(target, Compression):
        if not structure.structured:
            return call(weight_sparsity_for(net, target.ratio)), None, {}
        result, _, info = search_unit_sparsity(total_params(net), target.ratio, call,
                                               lambda r: total_params(shrink(r.net, masks=r.masks, warn=False).net),
                                               iters=10)
        return result, shrink(result.net, masks=result.masks, warn=False).net, info
    return call(target), None, {}


def baseline_pruned(ctx: Context, result: BaselineResult, shrunk: Optional[nn.Module], info: dict[str, Any],
                    method: str, retrained_from_scratch: bool = False) -> Pruned:
    """The :class:`Pruned` of a baseline's result, its history reported and its masks kept for saving."""
    rows = []
    for row in result.history:
        label = f"step {row['step']}" if "step" in row else f"round {row.get('round', 1)}"
        rows.append({"stage": label, **{k: v for k, v in row.items() if k not in ("round", "step")}})
    ctx.progress.rows(rows)
    budget = result.budget
    if retrained_from_scratch:  # its own training replaces the run's
        train_epochs, finetune = int(budget.train_epochs), int(budget.finetune_epochs)
    else:  # the run's training is the base; training beyond it (a lottery's rewind replay) is retraining
        train_epochs, finetune = None, int(budget.finetune_epochs) + int(budget.train_epochs) - ctx.base_epochs
    info = dict(info)
    info.update({"method": method, "score": result.score, "structure": result.structure, "scope": result.scope,
                 "sparsity_target": result.target_sparsity, "mask_sparsity": result.sparsity,
                 "reached_sparsity": result.sparsity, "budget": budget.to_dict(), "baseline": result.config})
    pruned = Pruned(net=shrunk if shrunk is not None else result.net,
                    masks=None if shrunk is not None else result.masks, finetune_epochs=finetune,
                    train_epochs=train_epochs, info=info,
                    artifacts={"masks.safetensors": (result.masks.to_tensors(), {"method": method})})
    ctx.progress.stage("pruned", net=pruned.net, masks=pruned.masks)
    return pruned


def scope_for(scope: Optional[Scope], structure: Structure) -> Scope:
    """The scope given, else the baselines' default for the structure (global for weights, per layer for units)."""
    return scope if scope is not None else default_scope(structure)


def run_plain(ctx: Context, target: Target, method: str, structure: Structure,
              call: Callable[[Sparsity], BaselineResult], retrained_from_scratch: bool = False,
              info: Optional[dict[str, Any]] = None) -> Pruned:
    """Run a baseline ``call`` on the context's plain network to ``target``, its stages reported."""
    ctx.progress.stage("dense", net=ctx.run.net)
    result, shrunk, search = at_target(ctx.run.net, target, structure, call)
    return baseline_pruned(ctx, result, shrunk, {**search, **(info or {})}, method, retrained_from_scratch)
