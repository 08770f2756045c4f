"""``magnitude`` and ``random``: one-shot pruning by |w| (or unit norms) or by seeded random importances.

``magnitude`` starts from the deterministic twin, or with ``on = "bayesian"`` from the Bayesian
network, which it then prunes by the magnitude of the posterior mean |mu| (the ``bayes``
method with the ``magnitude`` score: a study can separate "trained as a BNN" from "ranked by
the posterior"). ``random`` is the control.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ...errors import UserError
from ...names import Kind, Scope, Structure
from ..baselines import one_shot
from ..importance import check_score_fits
from ..targets import Compression, Sparsity, Target
from .base import Method, Pruned
from .bayes import prune_posterior
from .context import Context
from .options import count, score_field
from .plain import budget_options, run_plain, scope_for

__all__ = ["Magnitude", "MagnitudeOptions", "Random", "RandomOptions"]


@dataclass(frozen=True)
class RandomOptions:
    """Options of ``random`` (and what ``magnitude`` adds to)."""

    structure: Structure = Structure.WEIGHT
    scope: Optional[Scope] = None
    finetune_epochs: int = count(0)
    budget_epochs: Optional[int] = count(None, doc="total epoch budget, the run's training included")
    ignored_layers: tuple[str, ...] = ()

    KEY_ALIASES: ClassVar[dict[str, str]] = {"ignore": "ignored_layers"}


@dataclass(frozen=True)
class MagnitudeOptions(RandomOptions):
    """Options of ``magnitude``: ``random``'s, the network it starts from and the norm."""

    on: Kind = Kind.DETERMINISTIC
    score: str = score_field("magnitude", "magnitude (|w|; per unit the L2 norm) or l1 (per unit the L1 norm)")

    def __post_init__(self) -> None:
        if self.on is Kind.BAYESIAN:
            if self.score != "magnitude":
                raise UserError(f"method 'magnitude' ranks a Bayesian network by the posterior mean |mu|; for score "
                                 f"{self.score!r} use --method bayes")
            if self.budget_epochs is not None:
                raise UserError("budget_epochs spreads the epochs of a deterministic baseline; a Bayesian network "
                                 "is fine-tuned for finetune_epochs")
        else:
            check_score_fits(self.score, bayesian=False)


def _one_shot(method: Method, ctx: Context, target: Target, score: str) -> Pruned:
    o = method.options
    finetune = budget_options(method.name, o.budget_epochs, ctx.base_epochs).get("finetune_epochs",
                                                                                  o.finetune_epochs)

    def call(sparsity: Sparsity):
        return one_shot(ctx.run.net, sparsity, score=score, structure=o.structure,
                        scope=scope_for(o.scope, o.structure), seed=ctx.seed, ignored_layers=o.ignored_layers,
                        data=ctx.data, finetune_epochs=finetune, fit_options=ctx.fit.plain(ctx.seed),
                        base_budget=ctx.base_budget)

    return run_plain(ctx, target, method.name, o.structure, call)


class Magnitude(Method):
    """One-shot magnitude pruning: |w| (unstructured) or the L1 / L2 norm of neurons / kernels."""

    name = "magnitude"
    description = "one-shot magnitude pruning (|w|, or L1/L2 norm of units); on a Bayesian network |mu|"
    Options = MagnitudeOptions
    targets = (Sparsity, Compression)
    starts = (Kind.DETERMINISTIC, Kind.BAYESIAN)

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        o = self.options
        if o.on is Kind.BAYESIAN:
            result = prune_posterior(ctx, target, score="magnitude", structure=o.structure,
                                     scope=scope_for(o.scope, o.structure),
                                     finetune_epochs=o.finetune_epochs, ignored_layers=o.ignored_layers)
            result.info.update({"method": self.name, "ranked_by": "posterior mean |mu|"})
            return result
        return _one_shot(self, ctx, target, o.score)


class Random(Method):
    """One-shot random pruning with seeded importances: the control every study needs."""

    name = "random"
    description = "one-shot random pruning, seeded (the control)"
    Options = RandomOptions
    targets = (Sparsity, Compression)

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        return _one_shot(self, ctx, target, "random")
