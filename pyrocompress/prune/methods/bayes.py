"""``bayes``: prune a Bayesian network by a posterior score; shrink units; optionally fine-tune with SVI.

Unstructured selection masks single weights (location 0, scale 1e-8) and keeps the masks
through fine-tuning; structured selection (``neuron`` / ``kernel`` / ``unit``) deletes whole
units and returns the physically smaller model and guide. A compression target is reached
as :mod:`pyrocompress.prune.targets` describes (a weight sparsity, or a search over the unit
sparsity of the shrunk network).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from ...infer.fit import fit
from ...infer.guides import posterior_mean_network
from ...names import Kind, Reduction, Scope, Structure
from ..masks import Masks
from ..policy import PrunePolicy
from ..shrink import Shrunk, shrink
from ..targets import AutoThreshold, Compression, Sparsity, Target, Threshold, search_unit_sparsity, total_params
from ..targets import weight_sparsity_for
from .base import Method, Pruned
from .context import Context
from .options import count, number, score_field

__all__ = ["Bayes", "BayesOptions", "prune_posterior"]


@dataclass(frozen=True)
class BayesOptions:
    """Options of ``bayes``: which posterior score ranks what, and the SVI fine-tuning after."""

    score: Optional[str] = score_field(None, "posterior score (default snr; under the automatic threshold the "
                                             "prior's own rule where it has one)")
    structure: Structure = Structure.WEIGHT
    scope: Scope = Scope.GLOBAL
    reduction: Optional[Reduction] = None
    finetune_epochs: int = count(0)
    score_options: dict = field(default_factory=dict)
    ignored_layers: tuple[str, ...] = ()
    auto_threshold: bool = False
    min_separation: float = number(0.5, open_low=True)

    KEY_ALIASES: ClassVar[dict[str, str]] = {"ignore": "ignored_layers"}


def _policy(score: Optional[str], structure: Structure, scope: Scope, reduction: Optional[Reduction],
            score_options: dict, ignored: tuple[str, ...], target: Target) -> PrunePolicy:
    select: dict[str, Any] = {}
    if isinstance(target, Sparsity):
        select["sparsity"] = target
    elif isinstance(target, Threshold):
        select["threshold"] = target.value
    elif isinstance(target, AutoThreshold):
        select.update(auto=True, min_separation=target.min_separation)
    return PrunePolicy(score=score, structure=structure, per_layer=scope is Scope.LAYER,
                       reduction=None if reduction is None else reduction.value, score_options=dict(score_options),
                       ignored_layers=ignored, **select)


def prune_posterior(ctx: Context, target: Target, *, score: Optional[str], structure: Structure, scope: Scope,
                    finetune_epochs: int = 0, reduction: Optional[Reduction] = None,
                    score_options: Optional[dict] = None, ignored_layers: tuple[str, ...] = ()) -> Pruned:
    """Prune a copy of the context's Bayesian network by a posterior score to ``target``; fine-tune with SVI."""
    model, guide = copy.deepcopy(ctx.run.model), copy.deepcopy(ctx.run.guide)
    ctx.progress.stage("dense", model=model, guide=guide)

    def policy(t: Target) -> PrunePolicy:
        return _policy(score, structure, scope, reduction, score_options or {}, ignored_layers, t)

    info: dict[str, Any] = {"structure": structure.value, "scope": scope.value, "target": target.describe()}
    if not structure.structured:
        if isinstance(target, Compression):
            target = weight_sparsity_for(posterior_mean_network(model, guide), target.ratio)
        chosen = policy(target)
        masks = chosen.masks(model, guide)
        masks.apply(model, guide)
        info.update(score=chosen.resolved_score(model), mask_sparsity=masks.sparsity())
        ctx.progress.stage("pruned", model=model, guide=guide, masks=masks)
        hook = masks.step_hook()
    else:
        if isinstance(target, Compression):
            dense_params = total_params(posterior_mean_network(model, guide))

            def make(s: Sparsity) -> tuple[Shrunk, Masks]:
                masks = policy(s).masks(model, guide)
                return shrink(model, guide, masks=masks, warn=False), masks

            (small, selected), s, search = search_unit_sparsity(dense_params, target.ratio, make,
                                                                lambda r: total_params(r[0].net))
            info.update(search)
            chosen = policy(Sparsity(s))
        else:
            chosen = policy(target)
            selected = chosen.masks(model, guide)
            small = shrink(model, guide, masks=selected)
        info.update(score=chosen.resolved_score(model), mask_sparsity=selected.sparsity(),
                    units_change=small.plan.summary())
        model, guide, masks, hook = small.model, small.guide, None, None
        ctx.progress.stage("pruned", model=model, guide=guide)
    if finetune_epochs:
        fit(model, guide, ctx.data, epochs=finetune_epochs, step_hook=hook, **ctx.fit.svi(ctx.seed))
        ctx.progress.stage("finetuned", model=model, guide=guide, masks=masks)
    return Pruned(model=model, guide=guide, masks=masks, finetune_epochs=finetune_epochs, info=info)


class Bayes(Method):
    """Prune a Bayesian network by a posterior score (any registered score), unstructured or by unit."""

    name = "bayes"
    description = "Bayesian network pruned by a posterior score (snr, prob_nonzero, hdi, kl, log_alpha, ...)"
    Options = BayesOptions
    targets = (Sparsity, Compression, Threshold, AutoThreshold)
    starts = (Kind.BAYESIAN,)

    def uses_grid(self) -> bool:
        return not self.options.auto_threshold

    def default_target(self) -> Optional[Target]:
        return AutoThreshold(self.options.min_separation) if self.options.auto_threshold else None

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        o = self.options
        result = prune_posterior(ctx, target, score=o.score, structure=o.structure, scope=o.scope,
                                 finetune_epochs=o.finetune_epochs, reduction=o.reduction,
                                 score_options=o.score_options, ignored_layers=o.ignored_layers)
        result.info["method"] = self.name
        return result
