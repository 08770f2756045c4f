"""Sparsity schedules: IMP's geometric rounds, Zhu & Gupta's cubic ramp, lottery-ticket rates and trajectories."""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from ...errors import UserError
from ..targets import Sparsity, as_sparsity, weight_sparsity_for
from .common import check_count

__all__ = ["geometric_schedule", "cubic_sparsity", "check_schedule", "lottery_rates", "schedule_plan",
           "weight_share", "trajectory_schedule"]


def geometric_schedule(target: float | Sparsity, rounds: int) -> list[float]:
    """Per-round cumulative sparsities ``1 - (1 - target)^(r/R)``: the same fraction of the
    remaining weights goes in every round and the target is reached after round ``R``."""
    target = as_sparsity(target).value
    rounds = check_count(rounds, "rounds")
    return [1.0 - (1.0 - target) ** (r / rounds) for r in range(1, rounds + 1)]


def cubic_sparsity(step: int, begin: int, end: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017): ``s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3`` clipped to [t0, t1]."""
    if end <= begin:
        return final if step >= begin else initial
    frac = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - frac) ** 3


def check_schedule(schedule: Sequence[float]) -> list[float]:
    """A lottery / IMP sparsity schedule: a non-empty, strictly increasing list of sparsities in [0, 1)."""
    values = [as_sparsity(s).value for s in schedule]
    if not values or any(b <= a for a, b in zip(values, values[1:])):
        raise UserError(f"schedule must be a non-empty, strictly increasing list of sparsities in (0, 1), "
                         f"got {list(schedule)!r}")
    return values


def lottery_rates(sizes: dict[str, int], out_name: str, target: Optional[float], rounds: int, rate: float,
                  output_rate: Optional[float]) -> tuple[float, float]:
    """Per-round rates (hidden, output). With a ``target``, the hidden rate is solved by
    bisection so that ``rounds`` rounds prune that fraction of all candidate weights, the
    output layer keeping its ratio to it (half by default)."""
    ratio = 0.5 if output_rate is None else output_rate / rate
    if target is None or rounds == 0:
        return rate, rate * ratio
    total = sum(sizes.values())

    def reached(p: float) -> float:
        pruned = sum(size * (1.0 - (1.0 - (p * ratio if n == out_name else p)) ** rounds)
                     for n, size in sizes.items())
        return pruned / total

    lo, hi = 0.0, min(1.0, 1.0 / ratio if ratio > 1 else 1.0) - 1e-9
    if reached(hi) < target:
        return hi, hi * ratio
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if reached(mid) < target else (lo, mid)
    return hi, hi * ratio


def schedule_plan(sizes: dict[str, int], out_name: str, schedule: Sequence[float],
                  ratio: float) -> list[tuple[float, float]]:
    """Cumulative (hidden, output) layer sparsities after each round of a sparsity ``schedule``.

    Round r prunes the fraction p of the remaining weights of every hidden layer and
    ``ratio * p`` of the output layer's, p solved by bisection so that the candidate weights
    reach ``schedule[r]`` (a constant schedule of per-round rates gives back constant p).
    """
    total = sum(sizes.values())
    keep_h, keep_o = 1.0, 1.0
    plan = []
    p_max = min(1.0, 1.0 / ratio if ratio > 1 else 1.0) - 1e-12

    def reached(p: float) -> float:
        kh, ko = keep_h * (1.0 - p), keep_o * (1.0 - ratio * p)
        return sum(size * (1.0 - (ko if n == out_name else kh)) for n, size in sizes.items()) / total

    for target in schedule:
        lo, hi = 0.0, p_max
        if reached(hi) >= target:  # else the most that can go in one round
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if reached(mid) < target else (lo, mid)
        p = hi
        keep_h, keep_o = keep_h * (1.0 - p), keep_o * (1.0 - ratio * p)
        plan.append((1.0 - keep_h, 1.0 - keep_o))
    return plan


def weight_share(sizes: dict[str, int], s_hidden: float, s_out: float, out_name: str) -> float:
    """The sparsity of all candidate weights when hidden layers are at ``s_hidden`` and the output at ``s_out``."""
    total = sum(sizes.values())
    return sum(size * (s_out if n == out_name else s_hidden) for n, size in sizes.items()) / max(total, 1)


def trajectory_schedule(net: nn.Module, grid: Sequence[float], point: float, rounds: int) -> list[float]:
    """The lottery sparsity schedule that walks a study's operating points as one trajectory.

    The first point of ``grid`` (compression ratios) is reached in ``rounds`` rounds (the
    same fraction of the remaining weights each round), every later point one round after
    the one before, up to ``point``; the ticket of each point is the network retrained in its
    round, so the trials of all points share their rounds (Frankle & Carbin report every
    sparsity of one run).
    """
    points = sorted({float(c) for c in grid if float(c) <= float(point) * (1 + 1e-9)} | {float(point)})
    sparsities: list[float] = []
    for c in points:
        s = weight_sparsity_for(net, c).value
        if not sparsities or s > sparsities[-1] + 1e-12:
            sparsities.append(s)
    return geometric_schedule(sparsities[0], rounds) + sparsities[1:]
