"""What a baseline costs: epochs and seconds of training, fine-tuning and pruning; spreading a total over a method.

Studies compare methods at equal budget: :class:`Budget` counts what a method used (the
dense training it started from included), :func:`allocate_budget` spreads a total epoch
budget over a method's phases.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import UserError
from .common import check_count

__all__ = ["Budget", "allocate_budget", "BUDGET_METHODS"]

#: the baselines a budget can be spread over
BUDGET_METHODS = ("magnitude", "random", "imp", "lottery", "gradual")


@dataclass
class Budget:
    """Epochs and seconds a method used: dense training plus all fine-tuning / retraining."""

    train_epochs: int = 0
    finetune_epochs: int = 0
    train_seconds: float = 0.0
    finetune_seconds: float = 0.0
    prune_seconds: float = 0.0
    steps: int = 0

    @property
    def total_epochs(self) -> int:
        return int(self.train_epochs + self.finetune_epochs)

    @property
    def seconds(self) -> float:
        return float(self.train_seconds + self.finetune_seconds + self.prune_seconds)

    def add_fit(self, result, kind: str) -> None:
        """Count a :class:`~pyrocompress.infer.FitResult` as ``"train"`` or ``"finetune"``."""
        if kind == "train":
            self.train_epochs += int(result.epochs)
            self.train_seconds += float(result.seconds)
        else:
            self.finetune_epochs += int(result.epochs)
            self.finetune_seconds += float(result.seconds)
        self.steps += int(result.steps)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update({"total_epochs": self.total_epochs, "seconds": self.seconds})
        return out


def allocate_budget(method: str, total_epochs: int, base_epochs: int = 0, rounds: int = 1,
                    rewind_epoch: int = 0) -> dict[str, Any]:
    """Spread a total epoch budget (dense training included) over a method's phases.

    ``base_epochs`` is what the dense network already cost. Returns the keyword arguments
    that make the method use ``total_epochs``: ``finetune_epochs`` (one-shot: one number;
    ``imp``: one per round, the remainder to the last rounds), ``train_epochs``
    (``lottery``: every round retrains from the rewind point, so
    ``base + rounds * (train_epochs - rewind_epoch) <= total``) or ``epochs`` (``gradual``).
    """
    key = str(method).lower().replace("-", "_")
    if key not in BUDGET_METHODS:
        raise UserError(f"unknown method {method!r}; valid methods: {list(BUDGET_METHODS)}")
    total_epochs = check_count(total_epochs, "total_epochs")
    base_epochs = check_count(base_epochs, "base_epochs")
    rounds = check_count(rounds, "rounds")
    rewind_epoch = check_count(rewind_epoch, "rewind_epoch")
    left = total_epochs - base_epochs
    if left < 0:
        raise UserError(f"the budget of {total_epochs} epochs is below the {base_epochs} epochs the dense network "
                         "already used; give a budget of at least that")
    if key in ("magnitude", "random"):
        return {"finetune_epochs": left}
    if key == "gradual":
        if left < 1:
            raise UserError(f"gradual pruning needs at least 1 epoch beyond the dense {base_epochs}; give a budget "
                             f">= {base_epochs + 1}")
        return {"epochs": left}
    if rounds < 1:
        raise UserError(f"{key} needs rounds >= 1 to spend a budget")
    if key == "imp":
        base, extra = divmod(left, rounds)
        return {"finetune_epochs": [base + (1 if r >= rounds - extra else 0) for r in range(rounds)]}
    if rewind_epoch:
        left -= rewind_epoch  # replaying the first epochs to reach the rewind point costs them once
    per_round, extra = divmod(left, rounds)
    if per_round < 1:
        raise UserError(f"lottery needs at least {rounds + rewind_epoch} epochs beyond the dense {base_epochs} "
                         f"({rounds} rounds); give a budget >= {base_epochs + rounds + rewind_epoch}")
    if extra:
        warnings.warn(f"lottery: {extra} of the {total_epochs} budget epochs cannot be spread evenly over {rounds} "
                      "rounds and stay unused", RuntimeWarning, stacklevel=2)
    return {"train_epochs": per_round + rewind_epoch}
