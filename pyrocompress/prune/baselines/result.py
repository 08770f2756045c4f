"""What a baseline returns: the pruned network, its masks, what it reached and what it cost."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from ..masks import Masks
from .budget import Budget

__all__ = ["BaselineResult"]


@dataclass
class BaselineResult:
    """A pruned deterministic network and how it was obtained.

    ``net`` has the architecture it started with, pruned weights exactly zero (shrink it
    with the prune-core shrinker for structured masks). ``masks`` are the keep masks
    (:class:`~pyrocompress.prune.masks.Masks`); ``sparsity`` is the reached fraction of
    pruned weights (structured: of pruned units) over the candidate layers; ``stored``
    holds reference weights (lottery: ``init`` and ``rewind``); ``ticket`` the lottery
    ticket (rewound weights times the final mask).
    """

    method: str
    net: nn.Module
    masks: Masks
    target_sparsity: float
    sparsity: float
    budget: Budget
    structure: str = "weight"
    scope: str = "global"
    score: str = "magnitude"
    history: list[dict] = field(default_factory=list)
    stored: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    ticket: Optional[dict[str, torch.Tensor]] = None
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no tensors): method, sparsities, per-layer sparsity, budget."""
        per_layer = {name: 1.0 - float(m.float().mean()) for name, m in self.masks.weight.items()}
        return {"method": self.method, "score": self.score, "structure": str(self.structure),
                "scope": str(self.scope), "target_sparsity": self.target_sparsity, "sparsity": self.sparsity,
                "layer_sparsity": per_layer, "budget": self.budget.to_dict(), "config": dict(self.config)}
