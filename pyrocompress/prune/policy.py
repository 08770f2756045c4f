"""Pruning policy: which weights or units to delete, from importance scores.

A :class:`PrunePolicy` turns scores (any registered score of
:mod:`pyrocompress.diagnostics.scores`; all are importances, higher = keep) into
:class:`~pyrocompress.prune.masks.Masks`.

* ``structure``: ``"weight"`` (single weights, unstructured), ``"neuron"`` (output
  neurons of hidden Linear layers), ``"kernel"`` (kernels = output channels of Conv2d
  layers) or ``"unit"`` (neurons and kernels).
* ranking: global over all candidate layers (default) or ``per_layer``.
* selection, exactly one of: ``sparsity`` in [0, 1) (the fraction of candidate weights,
  or of candidate units for structured pruning, to delete); ``threshold`` (delete what
  scores strictly below it, e.g. SNR < 1, kernel norm < 1e-2; for ``hdi`` a threshold of
  0 deletes weights whose interval contains zero); ``auto`` (per layer, see below).
* safety: the output layer (the last Linear/Conv2d) is never a candidate for structured
  deletion, and under unstructured pruning keeps at least one weight per output unit;
  every layer keeps at least one unit (and one weight): when a selection would empty
  a layer, its best-scoring unit (weight) is kept and a ``UserWarning`` says so (it
  never refuses). ``ignored_layers`` are left untouched.

**Automatic threshold** (:func:`auto_threshold`), the posterior's answer to "which
threshold per layer": a trained Bayesian network drives the scores of what it does not
need towards zero, so a layer's scores on a log10 scale form a near-zero mode apart from
the rest. Per layer, a two-component Gaussian mixture is fitted to the log10 scores (EM)
and compared with one Gaussian by BIC; when the mixture wins and its two means are at
least ``min_separation`` decades apart (default 0.5, a factor of ~3), the threshold is
where the two weighted component densities cross, and what lies below is deleted.
Otherwise the layer has nothing redundant and keeps everything (this is what stops
iterative self-compression). Scores <= 0 (e.g. an HDI containing zero, a weight already
deleted) are redundant outright.

**A prior's own rule** comes first: when every candidate layer's weight prior has a deletion
rule (:meth:`pyrocompress.nn.priors.Prior.deletion_rule`, e.g. sparse variational dropout's
log alpha > 3) and the policy's score is the rule's score, or was left at its default
(``score=None``), the automatic threshold of each layer is its prior's threshold on that
score; otherwise the data-driven rule above.

Public API: ``PrunePolicy`` (``.masks(model, guide)``, ``.scores(model, guide)``,
``.select(scores, shapes, output_layer)``, ``.deletion_rules(model)``), ``auto_threshold``,
``STRUCTURES``, ``candidate_layers``, ``output_layer``.
"""
from __future__ import annotations

import fnmatch
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch

from ..errors import UserError
from ..diagnostics.scores import get_score, group_scores, weight_scores
from ..infer.guides import is_posterior_guide
from ..names import Structure
from ..nn.model import BayesianModel
from ..nn.priors import DeletionRule
from .masks import Masks, layer_shapes
from .targets import Sparsity, as_sparsity, check_sparsity

__all__ = ["PrunePolicy", "auto_threshold", "STRUCTURES", "candidate_layers", "output_layer", "check_sparsity",
           "resolve_structure", "DEFAULT_SCORE"]

STRUCTURES = tuple(s.value for s in Structure)
#: the score a policy ranks by when none is given (and no prior rule applies)
DEFAULT_SCORE = "snr"


def resolve_structure(structure: str) -> Structure:
    """The :class:`~pyrocompress.names.Structure` a name (or alias) means."""
    return Structure.parse(structure)


def output_layer(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The last Linear / Conv2d layer (forward order): the network's output layer."""
    if not shapes:
        raise UserError("the network has no Linear or Conv2d layer")
    return list(shapes)[-1]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def candidate_layers(shapes: Mapping[str, tuple[int, ...]], structure: str, output: str,
                     ignored_layers: Sequence[str] = ()) -> list[str]:
    """Layers a policy may prune, in order: by structure, minus ignored (and minus the output
    layer for structured deletion)."""
    structure = Structure.parse(structure)
    for pattern in ignored_layers:
        if not any(_matches(n, [pattern]) for n in shapes):
            raise UserError(f"ignored layer {pattern!r} matches no layer; layers: {list(shapes)}")
    out = []
    for name, shape in shapes.items():
        if _matches(name, ignored_layers):
            continue
        conv = len(shape) == 4
        if structure == "weight":
            out.append(name)
        elif name == output:
            continue
        elif structure == "neuron" and not conv:
            out.append(name)
        elif structure == "kernel" and conv:
            out.append(name)
        elif structure == "unit":
            out.append(name)
    return out


def _normal_logpdf(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return -0.5 * (torch.log(2 * math.pi * var) + (x - mean) ** 2 / var)


def _two_modes(x: torch.Tensor, var_floor: float, iterations: int = 200):
    """EM fit of a two-component 1-D Gaussian mixture, started at the best two-class (Otsu) split."""
    xs = torch.sort(x).values
    n = xs.numel()
    best, split = -1.0, 1
    for i in range(1, n):
        lo, hi = xs[:i], xs[i:]
        between = (i / n) * ((n - i) / n) * float(lo.mean() - hi.mean()) ** 2
        if between > best:
            best, split = between, i
    w = torch.tensor([split / n, (n - split) / n], dtype=x.dtype)
    mean = torch.stack([xs[:split].mean(), xs[split:].mean()])
    var = torch.stack([xs[:split].var(unbiased=False), xs[split:].var(unbiased=False)]).clamp_min(var_floor)
    for _ in range(iterations):
        logp = torch.stack([_normal_logpdf(x, mean[k], var[k]) + w[k].clamp_min(1e-12).log() for k in range(2)])
        resp = torch.softmax(logp, dim=0)
        nk = resp.sum(dim=1).clamp_min(1e-12)
        w = nk / n
        mean = (resp * x).sum(dim=1) / nk
        var = ((resp * (x - mean[:, None]) ** 2).sum(dim=1) / nk).clamp_min(var_floor)
    logp = torch.stack([_normal_logpdf(x, mean[k], var[k]) + w[k].clamp_min(1e-12).log() for k in range(2)])
    return w, mean, var, float(torch.logsumexp(logp, dim=0).sum())


def auto_threshold(scores: torch.Tensor, min_separation: float = 0.5, var_floor: float = 1e-3) -> Optional[float]:
    """Per-layer threshold separating a near-zero mode of the scores from the rest, or None.

    The rule (documented in the module docstring): on log10 of the positive scores, a
    two-component Gaussian mixture (EM) is compared with a single Gaussian by BIC. If
    the mixture wins and its two means lie at least ``min_separation`` decades apart,
    the threshold is where the two weighted component densities cross between the
    means; scores below it are redundant. Scores <= 0 are redundant outright (when the
    positive ones show no second mode, the threshold is the smallest positive score).
    Returns None when nothing is redundant.
    """
    values = scores.detach().double().flatten().cpu()
    positive = values[values > 0]
    has_nonpositive = bool((values <= 0).any())
    if positive.numel() >= 4:
        x = positive.log10()
        n = x.numel()
        var1 = x.var(unbiased=False).clamp_min(var_floor)
        loglik1 = float(_normal_logpdf(x, x.mean(), var1).sum())
        w, mean, var, loglik2 = _two_modes(x, var_floor)
        bic1 = -2 * loglik1 + 2 * math.log(n)
        bic2 = -2 * loglik2 + 5 * math.log(n)
        lo, hi = (0, 1) if mean[0] <= mean[1] else (1, 0)
        if bic2 < bic1 and float(mean[hi] - mean[lo]) >= min_separation:
            grid = torch.linspace(float(mean[lo]), float(mean[hi]), 2001, dtype=torch.float64)
            dens_lo = _normal_logpdf(grid, mean[lo], var[lo]) + w[lo].log()
            dens_hi = _normal_logpdf(grid, mean[hi], var[hi]) + w[hi].log()
            above = torch.nonzero(dens_hi >= dens_lo).flatten()
            cut = float(grid[int(above[0])]) if above.numel() else float(mean[hi])
            if bool((x < cut).any()):
                return float(10 ** cut)
    if has_nonpositive and positive.numel() > 0:
        return float(positive.min())
    return None


@dataclass
class PrunePolicy:
    """What to delete: a score, a structure, a ranking scope and a selection rule.

    ``score=None`` ranks by ``default_score`` (:data:`DEFAULT_SCORE`, ``snr``), or under ``auto``
    by the priors' own deletion rule where they have one; callers that pass their own scores to
    :meth:`select` (deterministic baselines) need none. ``reduction`` overrides the score's
    default group reduction; ``score_options`` go to the score (e.g. ``{"delta": 0.01}``).
    ``sparsity`` is a number in [0, 1) or a :class:`~pyrocompress.prune.targets.Sparsity`.
    """

    score: Optional[str] = None
    default_score: str = DEFAULT_SCORE
    structure: Structure = Structure.WEIGHT
    sparsity: Optional[Sparsity | float] = None
    threshold: Optional[float] = None
    auto: bool = False
    per_layer: bool = False
    ignored_layers: Sequence[str] = ()
    reduction: Optional[str] = None
    min_separation: float = 0.5
    score_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.score is not None:
            self.score = get_score(self.score).name
        self.default_score = get_score(self.default_score).name
        self.structure = Structure.parse(self.structure)
        chosen = [self.sparsity is not None, self.threshold is not None, bool(self.auto)]
        if sum(chosen) != 1:
            raise UserError("give exactly one selection rule: sparsity=, threshold= or auto=True "
                             f"(got sparsity={self.sparsity}, threshold={self.threshold}, auto={self.auto})")
        if self.sparsity is not None:
            self.sparsity = as_sparsity(self.sparsity)
        if self.threshold is not None and not (isinstance(self.threshold, (int, float))
                                               and math.isfinite(self.threshold)):
            raise UserError(f"threshold must be a finite number, got {self.threshold!r}")
        if not (self.min_separation > 0):
            raise UserError(f"min_separation must be positive (decades), got {self.min_separation}")
        if isinstance(self.ignored_layers, str):
            self.ignored_layers = (self.ignored_layers,)
        self.ignored_layers = tuple(self.ignored_layers)

    @property
    def structured(self) -> bool:
        return self.structure.structured

    # -------------------------------------------------------------- scores
    def deletion_rules(self, model: BayesianModel) -> Optional[dict[str, DeletionRule]]:
        """Per candidate layer, its prior's own deletion rule, when the automatic threshold should use
        them: ``auto``, every candidate layer's weight prior has a rule, all on one score, and that is
        the policy's score or the policy's score was left at its default. None otherwise."""
        if not self.auto or not isinstance(model, BayesianModel):
            return None
        shapes = layer_shapes(model)
        layers = dict(model.bayes_layers())
        names = [n for n in candidate_layers(shapes, self.structure, output_layer(shapes), self.ignored_layers)
                 if n in layers]
        rules = {n: layers[n].prior_of("weight").deletion_rule() for n in names}
        if not rules or any(r is None for r in rules.values()):
            return None
        scores = {get_score(r.score).name for r in rules.values()}
        if len(scores) != 1 or (self.score is not None and self.score not in scores):
            return None
        if get_score(scores.pop()).fn is None and not self.structured:
            return None  # a rule on units does not select single weights
        return rules

    def resolved_score(self, model: Optional[BayesianModel] = None) -> str:
        """The score this policy ranks ``model`` by (see :meth:`deletion_rules`)."""
        rules = self.deletion_rules(model) if model is not None else None
        if rules:
            return get_score(next(iter(rules.values())).score).name
        return self.score or self.default_score

    def scores(self, model: BayesianModel, guide: Any) -> dict[str, torch.Tensor]:
        """Per-weight (unstructured) or per-unit (structured) importances of the model's Bayesian layers."""
        if not isinstance(model, BayesianModel):
            raise TypeError(f"scores come from a BayesianModel and its guide, got {type(model).__name__}; "
                            "for a plain network compute scores yourself and call select()")
        score = self.resolved_score(model)
        if self.structured:
            return group_scores(model, guide, score, reduction=self.reduction, **self.score_options)
        return weight_scores(model, guide, score, **self.score_options)

    def masks(self, model: BayesianModel, guide: Any) -> Masks:
        """Masks selected from the posterior of ``model`` under ``guide``."""
        if is_posterior_guide(guide):
            guide.check_belongs_to(model)
        shapes = layer_shapes(model)
        rules = self.deletion_rules(model)
        thresholds = {n: r.threshold for n, r in rules.items()} if rules else None
        return self.select(self.scores(model, guide), shapes, output_layer(shapes), thresholds=thresholds)

    # ----------------------------------------------------------- selection
    def select(self, scores: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]],
               output: Optional[str] = None, thresholds: Optional[Mapping[str, float]] = None) -> Masks:
        """Masks from scores: ``{layer: weight-shaped}`` (unstructured) or ``{layer: (out,)}`` (structured).

        ``shapes`` are all layers' weight shapes (forward order; see ``layer_shapes``);
        layers without scores (e.g. deterministic layers of a Bayesian model) are kept.
        ``thresholds`` (per layer; the priors' rules) replace the automatic threshold.
        """
        shapes = dict(shapes)
        output = output or output_layer(shapes)
        layers = [n for n in candidate_layers(shapes, self.structure, output, self.ignored_layers) if n in scores]
        if not layers:
            what = {"kernel": "Conv2d layers", "neuron": "hidden Linear layers"}.get(self.structure, "layers")
            raise UserError(f"no layer to prune with structure {self.structure!r}: candidates are {what} with "
                             f"scores, not the output layer {output!r} or ignored layers; layers: {list(shapes)}")
        values = {}
        for n in layers:
            s = scores[n].detach().float().cpu()
            expected = (shapes[n][0],) if self.structured else tuple(shapes[n])
            if tuple(s.shape) != expected:
                raise UserError(f"scores of {n!r} have shape {tuple(s.shape)}, expected {expected} "
                                 f"for structure {self.structure!r}")
            if torch.isnan(s).any():
                raise UserError(f"scores of {n!r} contain NaN")
            values[n] = s
        keep = self._keep(values, thresholds)
        keep = self._safeguard(keep, values, output)
        if self.structured:
            return Masks.from_units(keep, {n: shapes[n] for n in keep})
        return Masks(keep)

    def _keep(self, values: dict[str, torch.Tensor],
              thresholds: Optional[Mapping[str, float]] = None) -> dict[str, torch.Tensor]:
        if self.auto and thresholds:
            return {n: v >= thresholds[n] for n, v in values.items()}
        if self.auto:
            keep = {}
            for n, v in values.items():
                t = auto_threshold(v, self.min_separation)
                keep[n] = torch.ones_like(v, dtype=torch.bool) if t is None else v >= t
            return keep
        if self.threshold is not None:
            return {n: v >= self.threshold for n, v in values.items()}
        if self.per_layer:
            return {n: _keep_top(v, self.sparsity.value) for n, v in values.items()}
        flat = torch.cat([v.flatten() for v in values.values()])
        kept = _keep_top(flat, self.sparsity.value)
        keep, start = {}, 0
        for n, v in values.items():
            keep[n] = kept[start:start + v.numel()].reshape(v.shape)
            start += v.numel()
        return keep

    def _safeguard(self, keep: dict[str, torch.Tensor], values: dict[str, torch.Tensor],
                   output: str) -> dict[str, torch.Tensor]:
        emptied = []
        for n, k in keep.items():
            v = values[n]
            if not bool(k.any()):
                emptied.append(n)
                k = k.clone()
                k.view(-1)[int(torch.argmax(v.flatten()))] = True
            if not self.structured and n == output:
                rows = k.reshape(k.shape[0], -1)
                dead = ~rows.any(dim=1)
                if bool(dead.any()):
                    rows = rows.clone()
                    best = v.reshape(v.shape[0], -1).argmax(dim=1)
                    rows[dead, best[dead]] = True
                    k = rows.reshape(k.shape)
            keep[n] = k
        if emptied:
            what = "unit" if self.structured else "weight"
            warnings.warn(f"the selection would have emptied layer(s) {emptied}: each keeps its best-scoring {what}",
                          UserWarning, stacklevel=3)
        return keep


def _keep_top(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep all but the ``round(sparsity * n)`` lowest values (stable: ties keep the earlier)."""
    flat = values.flatten()
    n_prune = int(round(sparsity * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if n_prune > 0:
        order = torch.sort(flat, stable=True).indices
        keep[order[:n_prune]] = False
    return keep.reshape(values.shape)
