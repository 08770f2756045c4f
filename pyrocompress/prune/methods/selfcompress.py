"""``self_compress``: "Self-Compression in Bayesian Neural Networks", one-shot or iterative.

Kernels and neurons ranked by the norm of their posterior mean (or any posterior score) are
deleted physically by :func:`pyrocompress.prune.selfcompress.self_compress`: once
(``mode = "oneshot"``, to a sparsity, threshold, automatic threshold or compression ratio,
optionally fine-tuned) or round after round until the posterior marks nothing more
redundant (``mode = "iterative"``; the size is the posterior's, one point ``auto`` in a study).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from ...errors import UserError
from ...infer.guides import posterior_mean_network
from ...names import Kind, Mode, Scope, Structure
from ..policy import PrunePolicy
from ..selfcompress import self_compress
from ..shrink import Shrunk, shrink
from ..targets import AutoThreshold, Compression, Sparsity, Target, Threshold, search_unit_sparsity, total_params
from .base import Method, Pruned
from .context import Context
from .options import count, number, score_field

__all__ = ["SelfCompress", "SelfCompressOptions"]


@dataclass(frozen=True)
class SelfCompressOptions:
    """Options of ``self_compress``."""

    score: Optional[str] = score_field(None, "default norm (the L2 norm of a unit's posterior mean); under the "
                                             "automatic threshold the prior's own rule where it has one")
    structure: Structure = Structure.UNIT
    scope: Scope = Scope.LAYER
    mode: Mode = Mode.ONESHOT
    finetune_epochs: Optional[int] = count(None, doc="SVI epochs after each deletion (default 5 iterative, "
                                                     "0 one-shot)")
    tolerance: float = number(0.5, doc="allowed validation accuracy loss, in points")
    max_rounds: int = count(10, minimum=1)
    warm_start: bool = True
    min_separation: float = number(0.5, open_low=True)
    score_options: dict = field(default_factory=dict)
    ignored_layers: tuple[str, ...] = ()

    KEY_ALIASES: ClassVar[dict[str, str]] = {"ignore": "ignored_layers"}


class SelfCompress(Method):
    """Delete the kernels / neurons the posterior marks redundant, physically; once or iteratively."""

    name = "self_compress"
    description = "self-compression: delete kernels/neurons by posterior-mean norm, shrink (one-shot or iterative)"
    Options = SelfCompressOptions
    targets = (Sparsity, Compression, Threshold, AutoThreshold, None)
    starts = (Kind.BAYESIAN,)

    @property
    def iterative(self) -> bool:
        return self.options.mode is Mode.ITERATIVE

    def uses_grid(self) -> bool:
        return not self.iterative

    def default_target(self) -> Optional[Target]:
        return AutoThreshold(self.options.min_separation) if self.iterative else None

    def check_target(self, target: Optional[Target]) -> None:
        super().check_target(target)
        if self.iterative and isinstance(target, (Sparsity, Compression)):
            raise UserError(f"--{target.flag} is a one-shot rule; drop --iterative (mode = \"oneshot\") or use "
                             "--threshold / --auto-threshold")

    def _unit_sparsity_for(self, ctx: Context, ratio: float) -> tuple[Sparsity, dict]:
        """The unit sparsity whose shrunk network is ``ratio`` times smaller (bisection)."""
        o = self.options
        model, guide = ctx.run.model, ctx.run.guide

        def make(s: Sparsity) -> Shrunk:
            policy = PrunePolicy(score=o.score, default_score="norm", structure=o.structure, sparsity=s,
                                 per_layer=o.scope is Scope.LAYER, ignored_layers=o.ignored_layers,
                                 score_options=dict(o.score_options))
            return shrink(model, guide, masks=policy.masks(model, guide), warn=False)

        dense = total_params(posterior_mean_network(model, guide))
        _, s, info = search_unit_sparsity(dense, ratio, make, lambda r: total_params(r.net))
        return Sparsity(s), info

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        o = self.options
        info: dict[str, Any] = {"method": self.name, "mode": o.mode.value, "structure": o.structure.value,
                                "scope": o.scope.value, "tolerance": o.tolerance}
        if target is None:
            target = AutoThreshold(o.min_separation)
        if isinstance(target, Compression):
            target, search = self._unit_sparsity_for(ctx, target.ratio)
            info.update(search)
        select: dict[str, Any] = {"auto": isinstance(target, AutoThreshold)}
        if isinstance(target, Sparsity):
            select["sparsity"] = target
        elif isinstance(target, Threshold):
            select["threshold"] = target.value
        min_separation = target.min_separation if isinstance(target, AutoThreshold) else o.min_separation
        fit_options = {k: v for k, v in ctx.fit.svi(ctx.seed).items() if k != "seed"}
        result = self_compress(ctx.run.model, ctx.run.guide, ctx.data, score=o.score, structure=o.structure,
                               iterative=self.iterative, per_layer=o.scope is Scope.LAYER,
                               ignored_layers=o.ignored_layers, min_separation=min_separation,
                               tolerance=o.tolerance, max_rounds=o.max_rounds, finetune_epochs=o.finetune_epochs,
                               warm_start=o.warm_start, eval_samples=ctx.eval_samples, seed=ctx.seed,
                               fit_options=fit_options, score_options=dict(o.score_options), **select)
        ctx.progress.rows(result.history)
        trained = [r for r in result.history if r.get("round", 0) >= 1 and r.get("action") != "deleted"]
        epochs = o.finetune_epochs if o.finetune_epochs is not None else (5 if self.iterative else 0)
        info.update({"score": result.score, "target": target.describe(), "rounds": result.rounds,
                     "stop_reason": result.stop_reason,
                     "history": [{k: v for k, v in row.items() if not isinstance(v, dict)} for row in result.history]})
        return Pruned(model=result.model, guide=result.guide, finetune_epochs=len(trained) * epochs, info=info)
