"""``lottery``: lottery tickets, iterative magnitude pruning with rewinding (Frankle & Carbin 2019).

Each round prunes a rate of the remaining weights of every layer (the output layer at half
rate), rewinds the kept weights to the run's initial ones (or to those at the end of epoch
``rewind_epoch``) and retrains. ``schedule = "per_point"`` walks ``rounds`` rounds to each
target; ``"trajectory"`` walks a study's operating points as one run (``rounds`` rounds to
the first point, one more per later point), every round trained once and kept in the
context's cache, shared by the trials of all points.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from ...errors import UserError
from ...names import Schedule, Scope, Structure
from ..baselines import lottery_ticket, trajectory_schedule
from ..targets import Compression, Sparsity, Target, weight_sparsity_for
from .base import Method, Pruned
from .context import Context
from .options import count, number
from .plain import baseline_pruned, budget_options

__all__ = ["Lottery", "LotteryOptions"]


@dataclass(frozen=True)
class LotteryOptions:
    """Options of ``lottery``."""

    rounds: int = count(5, minimum=1)
    rate: Optional[float] = number(None, 0.0, 1.0, open_low=True, open_high=True,
                                   doc="fraction of the remaining weights pruned per round without a target "
                                       "(default 0.2)")
    rewind_epoch: int = count(0)
    train_epochs: Optional[int] = count(None, minimum=1, doc="epochs of every retraining (default: the run's)")
    scope: Scope = Scope.LAYER
    schedule: Schedule = Schedule.PER_POINT
    structure: Structure = Structure.WEIGHT
    budget_epochs: Optional[int] = count(None, doc="total epoch budget, the run's training included")
    ignored_layers: tuple[str, ...] = ()

    KEY_ALIASES: ClassVar[dict[str, str]] = {"ignore": "ignored_layers", "epochs": "train_epochs"}

    def __post_init__(self) -> None:
        if self.structure.structured:
            raise UserError("method 'lottery' prunes single weights; use --structure weight (or --method imp for "
                             "structured iterative pruning)")


class Lottery(Method):
    """Lottery tickets: prune, rewind to the initial weights, retrain, repeat."""

    name = "lottery"
    description = "lottery tickets: IMP with rewinding (Frankle & Carbin 2019)"
    Options = LotteryOptions
    targets = (Sparsity, Compression, None)

    def default_target(self) -> Optional[Target]:
        return None

    def check_target(self, target: Optional[Target]) -> None:
        super().check_target(target)
        if self.options.schedule is Schedule.TRAJECTORY and not isinstance(target, Compression):
            raise UserError("schedule 'trajectory' walks a study's operating points: it needs compression targets "
                             "(a study's grid)")

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        o = self.options
        net = ctx.run.net
        ctx.progress.stage("dense", net=net)
        budget = budget_options(self.name, o.budget_epochs, ctx.base_epochs, o.rounds, o.rewind_epoch)
        epochs = budget.get("train_epochs", o.train_epochs or ctx.train_epochs_configured)
        walk: dict[str, Any] = {"rounds": o.rounds, "seed": ctx.seed}
        if o.schedule is Schedule.TRAJECTORY:
            walk = {"schedule": trajectory_schedule(net, ctx.grid, target.ratio, o.rounds), "seed": ctx.shared_seed,
                    "cache_dir": None if ctx.cache_dir is None else Path(ctx.cache_dir) / "lottery"}
        elif isinstance(target, Compression):
            walk["sparsity"] = weight_sparsity_for(net, target.ratio)
        elif isinstance(target, Sparsity):
            walk["sparsity"] = target
        result = lottery_ticket(ctx.initial_network(), ctx.data, rate=o.rate if o.rate is not None else 0.2,
                                train_epochs=epochs, rewind_epoch=o.rewind_epoch, scope=o.scope,
                                trained_state=net.state_dict(), ignored_layers=o.ignored_layers,
                                fit_options=ctx.fit.plain(walk["seed"]), base_budget=ctx.base_budget, **walk)
        pruned = baseline_pruned(ctx, result, None, {}, self.name)
        kinds = ("init",) if o.rewind_epoch == 0 else ("init", "rewind")  # rewind 0: the init itself
        tensors = {f"{kind}.{k}": v.clone() for kind in kinds for k, v in result.stored[kind].items()}
        tensors.update({f"ticket.{k}": v.clone() for k, v in (result.ticket or {}).items()})
        pruned.artifacts["lottery.safetensors"] = (tensors, {"rewind_epoch": o.rewind_epoch, "rounds": o.rounds,
                                                             "source_run": str(ctx.run.path)})
        return pruned
