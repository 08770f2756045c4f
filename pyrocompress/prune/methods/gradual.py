"""``gradual``: gradual magnitude pruning during training, cubic schedule (Zhu & Gupta 2017).

From the trained twin (``start = "trained"``, the default: pruning while fine-tuning, the
epochs count as fine-tuning) or from its initial weights (``start = "init"``: pruning while
training from scratch, as Zhu & Gupta; the epochs replace the run's training).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ...names import GradualStart, Scope, Structure
from ..baselines import Budget, gradual_magnitude
from ..importance import check_score_fits
from ..targets import Compression, Sparsity, Target
from .base import Method, Pruned
from .context import Context
from .options import count, number, score_field
from .plain import budget_options, run_plain, scope_for

__all__ = ["Gradual", "GradualOptions"]


@dataclass(frozen=True)
class GradualOptions:
    """Options of ``gradual``."""

    finetune_epochs: Optional[int] = count(None, minimum=1, doc="epochs of pruning while training (default: the "
                                                                "run's epochs)")
    start: GradualStart = GradualStart.TRAINED
    begin_epoch: float = number(0.0)
    end_epoch: Optional[float] = number(None, doc="default: 3/4 of the epochs")
    initial_sparsity: float = number(0.0, 0.0, 1.0, open_high=True)
    pruning_steps: int = count(20, minimum=1)
    score: str = score_field("magnitude", "magnitude (|w|; per unit the L2 norm) or l1")
    structure: Structure = Structure.WEIGHT
    scope: Optional[Scope] = None
    budget_epochs: Optional[int] = count(None, doc="total epoch budget, the run's training included")
    ignored_layers: tuple[str, ...] = ()

    KEY_ALIASES: ClassVar[dict[str, str]] = {"ignore": "ignored_layers", "epochs": "finetune_epochs"}

    def __post_init__(self) -> None:
        check_score_fits(self.score, bayesian=False)


class Gradual(Method):
    """Prune to a cubic schedule of sparsities while training, pruned weights held at zero."""

    name = "gradual"
    description = "gradual magnitude pruning during training, cubic schedule (Zhu & Gupta 2017)"
    Options = GradualOptions
    targets = (Sparsity, Compression)

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        o = self.options
        from_scratch = o.start is GradualStart.INIT
        net = ctx.initial_network() if from_scratch else ctx.run.net
        base_epochs = 0 if from_scratch else ctx.base_epochs
        epochs = budget_options(self.name, o.budget_epochs, base_epochs).get(
            "epochs", o.finetune_epochs or ctx.train_epochs_configured or 1)

        def call(sparsity: Sparsity):
            return gradual_magnitude(net, ctx.data, sparsity, epochs=epochs, initial_sparsity=o.initial_sparsity,
                                     begin_epoch=o.begin_epoch, end_epoch=o.end_epoch, pruning_steps=o.pruning_steps,
                                     scope=scope_for(o.scope, o.structure), structure=o.structure, score=o.score,
                                     seed=ctx.seed, ignored_layers=o.ignored_layers,
                                     fit_options=ctx.fit.plain(ctx.seed),
                                     base_budget=Budget() if from_scratch else ctx.base_budget,
                                     budget_kind="train" if from_scratch else "finetune")

        return run_plain(ctx, target, self.name, o.structure, call, retrained_from_scratch=from_scratch,
                         info={"start": o.start.value})
