"""Importances of a network's weights or units: the first step of importance -> policy -> removal.

One function, :func:`importances`, ranks a plain network or a Bayesian model + guide
through the one score registry (:mod:`pyrocompress.diagnostics.scores`): per weight
``{layer: tensor like the weight}`` or per output unit ``{layer: (out_units,)}``; higher
means keep. A plain network's weights are their own location, so it is ranked by the
scores that need no posterior (``magnitude``, ``l1``, ``random``); a Bayesian model by
any score that reads a posterior (``magnitude`` is then |mu|, the magnitude of the
posterior mean, which separates "trained as a BNN" from "ranked by the posterior").
``random`` draws from a generator seeded by ``seed``: reproducible, independent of the
global RNG. The policy (:mod:`.policy`) selects from the result; :mod:`.shrink` removes.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..errors import UserError
from ..diagnostics.scores import SCORES, Score, get_score, group_scores, reduce_groups, weight_scores
from ..names import Structure
from ..nn.layers import BayesLayer
from ..nn.model import BayesianModel
from .masks import prunable_layers

__all__ = ["importances", "check_score_fits", "plain_scores", "posterior_scores", "plain_layers"]


def plain_scores() -> list[str]:
    """Scores that rank a plain network (no posterior needed)."""
    return sorted(n for n, s in SCORES.items() if not s.needs_posterior)


def posterior_scores() -> list[str]:
    """Scores that rank a Bayesian network (its posterior)."""
    return sorted(n for n, s in SCORES.items() if s.ranks_posterior)


def check_score_fits(score: str, bayesian: bool) -> Score:
    """The registered score ``score`` names, if it can rank a Bayesian network (``bayesian``) or a plain one."""
    try:
        spec = get_score(score)
    except ValueError:
        what = "a Bayesian run" if bayesian else "a deterministic network"
        valid = posterior_scores() if bayesian else plain_scores()
        raise UserError(f"unknown score {score!r}; valid scores for {what}: {valid}") from None
    if bayesian and not spec.ranks_posterior:
        raise UserError(f"score {score!r} is a deterministic-network score; a Bayesian run is ranked by one of "
                         f"{posterior_scores()} ('magnitude' is the posterior mean |mu|)")
    if not bayesian and spec.needs_posterior:
        raise UserError(f"score {score!r} needs a posterior (a Bayesian run); a deterministic network is ranked by "
                         f"one of {plain_scores()}")
    return spec


def plain_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv2d layers of a plain network, in module order."""
    if isinstance(net, BayesianModel):
        raise TypeError("plain_layers() takes a plain network; for a Bayesian model use model.bayes_layers()")
    layers = [(name, m) for name, m in prunable_layers(net) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if any(isinstance(m, BayesLayer) for _, m in prunable_layers(net)):
        raise TypeError("this network has Bayesian layers: pass the BayesianModel and its guide")
    if not layers:
        raise UserError("the network has no Linear or Conv2d layers to prune")
    return layers


@torch.no_grad()
def _plain(net: nn.Module, spec: Score, structure: Structure, seed: int, layers: Optional[Sequence[str]],
           reduction: Optional[str]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for name, layer in plain_layers(net):
        if layers is not None and name not in layers:
            continue
        w = layer.weight.detach()
        if not structure.structured:
            out[name] = spec.fn(w, None, layer, "weight", generator=gen)
        elif spec.per_unit_draws is not None:
            out[name] = spec.per_unit_draws(w.shape[0], generator=gen).to(w.device)
        else:
            out[name] = reduce_groups(spec.fn(w, None, layer, "weight"), reduction or spec.reduction)
    return out


def importances(target: Union[nn.Module, BayesianModel], score: str = "magnitude",
                structure: Union[Structure, str] = Structure.WEIGHT, *, guide=None, seed: int = 0,
                layers: Optional[Sequence[str]] = None, reduction: Optional[str] = None,
                **options) -> dict[str, torch.Tensor]:
    """Importances of a plain network, or of a Bayesian model under its guide, by one registered score.

    ``structure`` ``weight`` gives one value per weight, any other one value per output unit
    (the score's reduction over the unit's weights, or ``reduction``). ``layers`` limits a plain
    network's layers (the random draws then skip the others). ``options`` go to the score
    (``delta``, ``hdi_prob``). A score that cannot rank the target raises an error naming those
    that can.
    """
    structure = Structure.parse(structure)
    bayesian = isinstance(target, BayesianModel)
    spec = check_score_fits(score, bayesian)
    if not bayesian:
        if guide is not None:
            raise UserError("a guide was given with a plain network; pass the BayesianModel it belongs to")
        return _plain(target, spec, structure, seed, layers, reduction)
    if guide is None:
        raise UserError("scoring a Bayesian model needs its guide")
    gen = torch.Generator().manual_seed(int(seed))
    if structure.structured:
        return group_scores(target, guide, spec.name, reduction=reduction, generator=gen, **options)
    return weight_scores(target, guide, spec.name, generator=gen, **options)
