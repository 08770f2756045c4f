"""``dense``: the trained network itself, unpruned (the reference every study has, at 1x)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...names import Kind
from ..targets import Target
from .base import Method, Pruned
from .context import Context

__all__ = ["Dense", "DenseOptions"]


@dataclass(frozen=True)
class DenseOptions:
    """Options of ``dense``: which trained network."""

    on: Kind = Kind.BAYESIAN


class Dense(Method):
    """The trained network, unchanged."""

    name = "dense"
    description = "the trained network, unpruned (the reference, at 1x)"
    Options = DenseOptions
    targets = (None,)
    starts = (Kind.BAYESIAN, Kind.DETERMINISTIC)

    def uses_grid(self) -> bool:
        return False

    def default_target(self) -> Optional[Target]:
        return None

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        if ctx.run.is_bayesian:
            return Pruned(model=ctx.run.model, guide=ctx.run.guide, info={"method": self.name})
        return Pruned(net=ctx.run.net, info={"method": self.name})
