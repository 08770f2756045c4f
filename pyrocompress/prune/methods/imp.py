"""``imp``: iterative magnitude pruning with fine-tuning (Han et al. 2015) on the deterministic twin."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ...errors import UserError
from ...names import Scope, Structure
from ..baselines import iterative_magnitude
from ..importance import check_score_fits
from ..targets import Compression, Sparsity, Target
from .base import Method, Pruned
from .context import Context
from .options import count, score_field
from .plain import budget_options, run_plain, scope_for

__all__ = ["IMP", "IMPOptions"]


@dataclass(frozen=True)
class IMPOptions:
    """Options of ``imp``."""

    rounds: int = count(5, minimum=1)
    finetune_epochs: int = count(2, doc="fine-tuning epochs after each round")
    score: str = score_field("magnitude", "magnitude (|w|; per unit the L2 norm) or l1")
    structure: Structure = Structure.WEIGHT
    scope: Optional[Scope] = None
    budget_epochs: Optional[int] = count(None, doc="total epoch budget, the run's training included")
    ignored_layers: tuple[str, ...] = ()

    KEY_ALIASES: ClassVar[dict[str, str]] = {"ignore": "ignored_layers"}

    def __post_init__(self) -> None:
        check_score_fits(self.score, bayesian=False)
        if self.score == "random":
            raise UserError("method 'imp' is magnitude-based; valid scores: magnitude (alias l2, norm), l1")


class IMP(Method):
    """Prune the same fraction of the remaining weights each round, fine-tune with the pruned ones at zero."""

    name = "imp"
    description = "iterative magnitude pruning with fine-tuning (Han et al. 2015)"
    Options = IMPOptions
    targets = (Sparsity, Compression)

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        o = self.options
        finetune = budget_options(self.name, o.budget_epochs, ctx.base_epochs, o.rounds).get(
            "finetune_epochs", o.finetune_epochs)

        def call(sparsity: Sparsity):
            return iterative_magnitude(ctx.run.net, ctx.data, sparsity, rounds=o.rounds, finetune_epochs=finetune,
                                       score=o.score, structure=o.structure, scope=scope_for(o.scope, o.structure),
                                       seed=ctx.seed, ignored_layers=o.ignored_layers,
                                       fit_options=ctx.fit.plain(ctx.seed), base_budget=ctx.base_budget)

        return run_plain(ctx, target, self.name, o.structure, call)
