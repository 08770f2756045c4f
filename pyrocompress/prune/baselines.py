"""Magnitude-pruning baselines on the deterministic twin, under the same roof as the Bayesian criteria.

A comparative pruning study is only as honest as its baselines. This module gives the
standard ones, each reporting the epochs and seconds it used (training plus fine-tuning)
so that studies can compare at equal budget:

* one-shot magnitude pruning, unstructured (|w|), global or per layer;
* structured L1 / L2-norm pruning of output neurons (Linear) and kernels (Conv2d), whose
  result the prune-core shrinker physically removes like the Bayesian path's;
* random pruning, unstructured and structured, seeded (the control every study needs);
* iterative magnitude pruning with fine-tuning (Han et al. 2015): a geometric schedule of
  per-round sparsities that reaches the target after the stated rounds, fine-tuning
  ``k`` epochs after each round with the pruned weights held at zero;
* lottery-ticket iterative magnitude pruning with rewinding (Frankle & Carbin 2019):
  prune a rate per round (20%, output layer at half rate), rewind the kept weights to the
  stored initial weights (or to those of an early epoch), retrain, repeat;
* gradual magnitude pruning during training (Zhu & Gupta 2017, cubic schedule), through
  ``fit_deterministic``'s ``step_hook``.

Rankings use the same convention as :mod:`pyrocompress.diagnostics.scores`: a score is an
*importance* (higher = keep), given per weight ``{layer: tensor like weight}`` or per group
``{layer: (out_units,)}``. On a Bayesian model the ``magnitude`` score is |mu|, the
magnitude of the posterior mean, so that a study can separate "trained as a BNN" from
"ranked by the posterior" (:func:`score_target`).

Selection goes through prune-core's :class:`~pyrocompress.prune.policy.PrunePolicy` and
:class:`~pyrocompress.prune.masks.Masks` (bias masks for structured pruning); pruned weights
are exactly zero in the returned network, which :func:`~pyrocompress.prune.shrink.shrink`
makes physically smaller. :func:`register_prune_cli` adds the methods to
``pyrocompress prune --method ...`` (see docs/baselines.md).
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..data import Batches, DataBundle
from ..infer.predictive import network_probs
from ..metrics import classification_metrics
from ..nn.model import BayesianModel
from .masks import Masks, layer_shapes
from .masks import prunable_layers as _core_prunable
from .policy import STRUCTURES, PrunePolicy, candidate_layers, check_sparsity, resolve_structure
from .policy import output_layer as policy_output_layer

__all__ = [
    "METHODS",
    "NET_SCORES",
    "STRUCTURES",
    "SCOPES",
    "BAYESIAN_ONLY_SCORES",
    "FIT_OPTIONS",
    "Budget",
    "BaselineResult",
    "prunable_layers",
    "output_layer",
    "check_method_fits",
    "check_score_fits",
    "net_weight_scores",
    "net_group_scores",
    "score_target",
    "select_masks",
    "unit_sparsity",
    "masks_from_zeros",
    "MaskKeeper",
    "geometric_schedule",
    "cubic_sparsity",
    "one_shot",
    "random_prune",
    "iterative_magnitude",
    "lottery_ticket",
    "check_schedule",
    "gradual_magnitude",
    "allocate_budget",
    "to_torch_prune",
    "register_prune_cli",
]

#: baseline methods; ``magnitude`` and ``random`` are one-shot (optionally fine-tuned).
METHODS: dict[str, str] = {
    "magnitude": "one-shot pruning by |w| (unstructured) or by L1/L2 norm of neurons/kernels (structured)",
    "random": "one-shot random pruning, seeded (the control)",
    "imp": "iterative magnitude pruning with fine-tuning (Han et al. 2015)",
    "lottery": "lottery-ticket iterative magnitude pruning with rewinding (Frankle & Carbin 2019)",
    "gradual": "gradual magnitude pruning during training, cubic schedule (Zhu & Gupta 2017)",
}
#: methods that retrain a deterministic network (they make no sense on a posterior).
RETRAINING_METHODS = ("imp", "lottery", "gradual")
#: scores a plain network has (no posterior needed); ``norm`` is an alias of ``l2``.
NET_SCORES: dict[str, str] = {
    "magnitude": "|w| per weight; for groups the L2 norm of the group",
    "l1": "L1 norm of a group's weights (per weight: |w|)",
    "l2": "L2 norm of a group's weights (per weight: |w|)",
    "norm": "alias of l2 (the self-compression ranking)",
    "random": "seeded uniform random importances (the control)",
}
#: scores that need a posterior (a scale per weight); they do not exist for a plain network.
BAYESIAN_ONLY_SCORES = ("snr", "prob_nonzero", "hdi", "kl")
SCOPES = ("global", "layer")
#: keyword options forwarded to :func:`pyrocompress.infer.fit_deterministic` for (re)training.
FIT_OPTIONS = ("batch_size", "lr", "optimizer", "lr_schedule", "seed", "device", "weight_decay", "clip_norm",
               "progress")


# ----------------------------------------------------------------- budget
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
        return {"method": self.method, "score": self.score, "structure": self.structure, "scope": self.scope,
                "target_sparsity": self.target_sparsity, "sparsity": self.sparsity,
                "layer_sparsity": per_layer, "budget": self.budget.to_dict(), "config": dict(self.config)}


# ----------------------------------------------------------------- checks
def _check_count(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_choice(value: str, valid: Sequence[str], what: str) -> str:
    key = str(value).lower().replace("-", "_")
    if key not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid {what}s: {list(valid)}")
    return key


def check_method_fits(method: str, bayesian: bool) -> str:
    """Validate a baseline method name for a Bayesian or deterministic run; return it normalised."""
    key = _check_choice(method, list(METHODS), "method")
    if bayesian and key != "magnitude":
        what = "retrains a deterministic network" if key in RETRAINING_METHODS else "is a deterministic-twin control"
        raise ValueError(
            f"method {key!r} {what} and does not fit a Bayesian run; on a Bayesian run "
            f"use --method magnitude (the posterior mean |mu|) or a posterior score (--score snr, prob_nonzero, "
            f"hdi, kl, norm), or train the deterministic twin with `pyrocompress train --deterministic`")
    return key


def check_score_fits(score: str, bayesian: bool) -> str:
    """Validate a score for a Bayesian model (registry of diagnostics.scores) or a plain network."""
    key = str(score).lower().replace("-", "_")
    if bayesian:
        from ..diagnostics.scores import SCORES

        if key in SCORES:
            return key
        if key in NET_SCORES:
            raise ValueError(f"score {score!r} is a deterministic-network score; a Bayesian run is ranked by one of "
                             f"{sorted(SCORES)} ('magnitude' is the posterior mean |mu|)")
        raise ValueError(f"unknown score {score!r}; valid scores for a Bayesian run: {sorted(SCORES)}")
    if key in NET_SCORES:
        return key
    if key in BAYESIAN_ONLY_SCORES:
        raise ValueError(f"score {score!r} needs a posterior (a Bayesian run); a deterministic network is ranked by "
                         f"one of {sorted(NET_SCORES)}")
    raise ValueError(f"unknown score {score!r}; valid scores for a deterministic network: {sorted(NET_SCORES)}")


# ----------------------------------------------------------------- layers
def prunable_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv2d layers of a plain network, in module order."""
    if isinstance(net, BayesianModel):
        raise TypeError("prunable_layers() takes a plain network; for a Bayesian model use model.bayes_layers()")
    layers = [(name, m) for name, m in _core_prunable(net) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise ValueError("the network has no Linear or Conv2d layers to prune")
    return layers


def output_layer(net: nn.Module) -> str:
    """Name of the last prunable layer (the classifier): structured pruning never removes its units."""
    return prunable_layers(net)[-1][0]


def _candidates(net: nn.Module, structure: str, ignored_layers: Sequence[str]) -> list[str]:
    shapes = layer_shapes(net)
    return candidate_layers(shapes, structure, policy_output_layer(shapes), tuple(ignored_layers))


# ----------------------------------------------------------------- scores
@torch.no_grad()
def net_weight_scores(net: nn.Module, score: str = "magnitude", seed: int = 0,
                      layers: Optional[Sequence[str]] = None) -> dict[str, torch.Tensor]:
    """Per-weight importances of a plain network's layers: ``{layer: tensor like weight}``.

    ``magnitude`` / ``l1`` / ``l2`` / ``norm``: |w|; ``random``: uniform draws from a
    generator seeded by ``seed`` (reproducible, independent of the global RNG).
    """
    key = check_score_fits(score, bayesian=False)
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for name, layer in prunable_layers(net):
        if layers is not None and name not in layers:
            continue
        w = layer.weight.detach()
        out[name] = torch.rand(w.shape, generator=gen).to(w.device) if key == "random" else w.abs()
    return out


@torch.no_grad()
def net_group_scores(net: nn.Module, score: str = "l2", seed: int = 0,
                     layers: Optional[Sequence[str]] = None) -> dict[str, torch.Tensor]:
    """Per-group importances (output neuron of a Linear, kernel of a Conv2d): ``{layer: (out,)}``.

    ``l1``: sum |w| of the group; ``l2`` / ``norm`` / ``magnitude``: its L2 norm; ``random``:
    seeded uniform draws.
    """
    key = check_score_fits(score, bayesian=False)
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for name, layer in prunable_layers(net):
        if layers is not None and name not in layers:
            continue
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        if key == "random":
            out[name] = torch.rand(w.shape[0], generator=gen).to(w.device)
        elif key == "l1":
            out[name] = w.abs().sum(1)
        else:
            out[name] = w.square().sum(1).sqrt()
    return out


def score_target(target: Union[nn.Module, BayesianModel], score: str = "magnitude", structure: str = "weight",
                 guide=None, seed: int = 0, **options) -> dict[str, torch.Tensor]:
    """Importances of a plain network or of a Bayesian model + guide, through one interface.

    Plain network: :func:`net_weight_scores` / :func:`net_group_scores`. Bayesian model:
    the diagnostics registry (``magnitude`` = |mu|, ``snr``, ...); ``random`` is accepted
    for both. Scores that do not fit the target raise an error naming the ones that do.
    The result feeds :class:`~pyrocompress.prune.policy.PrunePolicy.select` like the
    Bayesian criteria's.
    """
    structured = resolve_structure(structure) != "weight"
    if isinstance(target, BayesianModel):
        if guide is None:
            raise ValueError("scoring a Bayesian model needs its guide")
        if str(score).lower() == "random":
            gen = torch.Generator().manual_seed(int(seed))
            shapes = {n: tuple(layer.site_shape("weight")) for n, layer in target.bayes_layers()}
            return {n: torch.rand(s[:1] if structured else s, generator=gen) for n, s in shapes.items()}
        from ..diagnostics.scores import group_scores, weight_scores

        key = check_score_fits(score, bayesian=True)
        if structured:
            return group_scores(target, guide, key, **options)
        return weight_scores(target, guide, key, **options)
    if guide is not None:
        raise ValueError("a guide was given with a plain network; pass the BayesianModel it belongs to")
    if structured:
        return net_group_scores(target, score, seed=seed)
    return net_weight_scores(target, score, seed=seed)


# ----------------------------------------------------------------- selection
def _ranked_scores(scores: Mapping[str, torch.Tensor], previous: Optional[Masks], structured: bool
                   ) -> dict[str, torch.Tensor]:
    """Scores with what ``previous`` already pruned set to -inf (it ranks lowest: nested masks)."""
    out = {}
    for name, s in scores.items():
        s = s.detach().float().cpu().clone()
        if previous is not None and name in previous.weight:
            keep = previous.unit_keep(name) if structured else previous.weight[name]
            if keep.shape != s.shape:
                raise ValueError(f"previous mask of layer {name!r} has shape {tuple(keep.shape)}, scores "
                                 f"{tuple(s.shape)}")
            s[~keep] = -math.inf
        out[name] = s
    return out


def select_masks(net: nn.Module, scores: Mapping[str, torch.Tensor], sparsity: float, *,
                 structure: str = "weight", scope: str = "global", ignored_layers: Sequence[str] = (),
                 previous: Optional[Masks] = None, layer_sparsity: Optional[Mapping[str, float]] = None) -> Masks:
    """Masks from importances through the same :class:`PrunePolicy` as the Bayesian criteria.

    ``scope="global"`` ranks all candidate layers together, ``"layer"`` prunes the same
    fraction of every layer (exactly, up to rounding). ``layer_sparsity`` gives some layers
    their own sparsity, ranked on their own (the lottery ticket's output layer at half
    rate). ``previous`` masks are nested: what they pruned stays pruned. The policy's
    safeguards hold (every layer keeps a unit; the output layer is never deleted whole).
    """
    scope = _check_choice(scope, SCOPES, "scope")
    structure = resolve_structure(structure)
    sparsity = check_sparsity(sparsity)
    layer_sparsity = {k: check_sparsity(v) for k, v in (layer_sparsity or {}).items()}
    unknown = sorted(set(layer_sparsity) - set(scores))
    if unknown:
        raise ValueError(f"layer_sparsity names layers {unknown} that are not scored; scored layers: {list(scores)}")
    ranked = _ranked_scores(scores, previous, structure != "weight")
    shapes = layer_shapes(net)
    output = policy_output_layer(shapes)
    rest = {n: s for n, s in ranked.items() if n not in layer_sparsity}
    result: Optional[Masks] = None
    parts: list[tuple[dict, float]] = [({n: ranked[n]}, s) for n, s in layer_sparsity.items()]
    if rest:
        parts.insert(0, (rest, sparsity))
    for part, s in parts:
        policy = PrunePolicy(score=None, structure=structure, sparsity=s, per_layer=(scope == "layer"),
                             ignored_layers=tuple(ignored_layers))
        masks = policy.select(part, shapes, output)
        result = masks if result is None else (result & masks)
    return result


def unit_sparsity(masks: Masks) -> float:
    """Fraction of deleted units (neurons / kernels) over the masked layers."""
    total = kept = 0
    for name in masks.weight:
        units = masks.unit_keep(name)
        total += units.numel()
        kept += int(units.sum())
    return 0.0 if total == 0 else 1.0 - kept / total


def _reached(masks: Masks, structure: str) -> float:
    return masks.sparsity() if structure == "weight" else unit_sparsity(masks)


def masks_from_zeros(net: nn.Module) -> Masks:
    """Keep masks of the nonzero weights: the pruning a zero-filled network already carries."""
    return Masks({name: layer.weight.detach() != 0 for name, layer in prunable_layers(net)})


class MaskKeeper:
    """A ``step_hook`` for :func:`fit_deterministic` holding pruned weights at zero after every step.

    ``masks`` may be replaced between steps (gradual pruning); ``on_step(net, step)`` runs
    first on every step; ``steps`` counts the calls.
    """

    def __init__(self, masks: Optional[Masks] = None, on_step: Optional[Callable[[nn.Module, int], None]] = None
                 ) -> None:
        self.masks = masks
        self.on_step = on_step
        self.steps = 0

    def __call__(self, net: nn.Module) -> None:
        self.steps += 1
        if self.on_step is not None:
            self.on_step(net, self.steps)
        if self.masks is not None:
            self.masks.apply(net)


# ----------------------------------------------------------------- schedules
def geometric_schedule(target: float, rounds: int) -> list[float]:
    """Per-round cumulative sparsities ``1 - (1 - target)^(r/R)``: the same fraction of the
    remaining weights goes in every round and the target is reached after round ``R``."""
    target = check_sparsity(target)
    rounds = _check_count(rounds, "rounds")
    return [1.0 - (1.0 - target) ** (r / rounds) for r in range(1, rounds + 1)]


def cubic_sparsity(step: int, begin: int, end: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017): ``s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3`` clipped to [t0, t1]."""
    if end <= begin:
        return final if step >= begin else initial
    frac = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - frac) ** 3


# ----------------------------------------------------------------- helpers
def _fit_options(options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(FIT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown fit options {unknown}; valid options: {list(FIT_OPTIONS)}")
    return opts


def _fit(net: nn.Module, data: DataBundle, epochs: int, options: dict[str, Any], hook: Optional[Callable]):
    from ..infer.fit import fit_deterministic

    return fit_deterministic(net, data, epochs=epochs, step_hook=hook, **options)


def _val_metrics(net: nn.Module, data: Optional[DataBundle]) -> dict[str, float]:
    if data is None or len(data.val) == 0:
        return {}
    device = next(net.parameters()).device
    m = classification_metrics(network_probs(net, data.val.x.to(device)), data.val.y.to(device))
    return {"val_accuracy": m["accuracy"], "val_nll": m["nll"]}


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _structure_score(structure: str, score: str) -> tuple[str, str]:
    structure = resolve_structure(structure)
    if structure != "weight" and str(score).lower() == "magnitude":
        score = "l2"
    return structure, check_score_fits(score, bayesian=False)


def _masks_for(net: nn.Module, score: str, structure: str, scope: str, sparsity: float, seed: int,
               ignored_layers: Sequence[str], previous: Optional[Masks] = None,
               layer_sparsity: Optional[Mapping[str, float]] = None) -> Masks:
    chosen = _candidates(net, structure, ignored_layers)
    if structure == "weight":
        scores = net_weight_scores(net, score, seed=seed, layers=chosen)
    else:
        scores = net_group_scores(net, score, seed=seed, layers=chosen)
    return select_masks(net, scores, sparsity, structure=structure, scope=scope, ignored_layers=ignored_layers,
                        previous=previous, layer_sparsity=layer_sparsity)


def _tolerance(masks: Masks, structure: str) -> float:
    """Half a unit of rounding per layer: what exact selection may differ from the target by."""
    if structure == "weight":
        total = sum(m.numel() for m in masks.weight.values())
    else:
        total = sum(masks.unit_keep(n).numel() for n in masks.weight)
    return (0.5 * len(masks.weight) + 1e-9) / max(total, 1)


def _warn_reached(method: str, target: float, reached: float, why: str, tol: float = 1e-9) -> None:
    if reached + tol < target:
        warnings.warn(f"{method}: the schedule does not reach the target sparsity {target:.4f}: reached "
                      f"{reached:.4f} ({why})", RuntimeWarning, stacklevel=3)


def _prepare(net: nn.Module, inplace: bool, device: Optional[str]) -> nn.Module:
    if isinstance(net, BayesianModel):
        raise TypeError("this baseline prunes a plain network; for a Bayesian model rank with "
                        "score_target(model, 'magnitude', guide=guide) and prune through PrunePolicy / Masks")
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(net).__name__}")
    out = net if inplace else copy.deepcopy(net)
    if device is not None:
        from ..infer.fit import resolve_device

        out.to(resolve_device(device))
    return out


def _weight_sparsity(net: nn.Module, masks: Masks) -> float:
    """Sparsity over every prunable layer's weights (unmasked layers count as dense)."""
    total = kept = 0
    for name, layer in prunable_layers(net):
        n = layer.weight.numel()
        total += n
        kept += int(masks.weight[name].sum()) if name in masks.weight else n
    return 1.0 - kept / max(total, 1)


def _finetune_list(finetune_epochs: Union[int, Sequence[int]], rounds: int) -> list[int]:
    if isinstance(finetune_epochs, (list, tuple)):
        if len(finetune_epochs) != rounds:
            raise ValueError(f"finetune_epochs lists {len(finetune_epochs)} rounds, rounds is {rounds}")
        return [_check_count(e, "finetune_epochs") for e in finetune_epochs]
    return [_check_count(finetune_epochs, "finetune_epochs")] * rounds


# ----------------------------------------------------------------- one-shot
def one_shot(net: nn.Module, sparsity: float, *, score: str = "magnitude", structure: str = "weight",
             scope: Optional[str] = None, seed: int = 0, ignored_layers: Sequence[str] = (),
             layer_sparsity: Optional[Mapping[str, float]] = None, data: Optional[DataBundle] = None,
             finetune_epochs: int = 0, fit_options: Optional[Mapping[str, Any]] = None,
             base_budget: Optional[Budget] = None, inplace: bool = False) -> BaselineResult:
    """One-shot pruning of a trained plain network, optionally followed by fine-tuning.

    ``structure="weight"`` ranks single weights by |w| (or randomly); ``"neuron"`` /
    ``"kernel"`` / ``"unit"`` rank output neurons of hidden Linear layers / kernels of Conv2d
    layers / both by their ``l2`` (default) or ``l1`` norm, or randomly. The sparsity counts
    weights, or units for a structured ranking. ``scope`` ``"global"`` ranks all candidate
    layers together, ``"layer"`` each on its own; the default is global for single weights
    and per layer for units (raw unit norms are not comparable across layers of different
    fan-in). ``base_budget`` is what the dense network cost; the result's budget adds the
    fine-tuning to it.
    """
    structure, score = _structure_score(structure, score)
    scope = _check_choice(scope or ("global" if structure == "weight" else "layer"), SCOPES, "scope")
    sparsity = check_sparsity(sparsity)
    finetune_epochs = _check_count(finetune_epochs, "finetune_epochs")
    opts = _fit_options(fit_options)
    opts.setdefault("seed", seed)
    if finetune_epochs and data is None:
        raise ValueError("fine-tuning needs the data: pass data=DataBundle")
    net = _prepare(net, inplace, opts.get("device"))
    budget = copy.deepcopy(base_budget) if base_budget is not None else Budget()
    t0 = time.perf_counter()
    masks = _masks_for(net, score, structure, scope, sparsity, seed, ignored_layers, layer_sparsity=layer_sparsity)
    masks.apply(net)
    budget.prune_seconds += time.perf_counter() - t0
    reached = _reached(masks, structure)
    if not layer_sparsity:
        _warn_reached(f"{score} {structure} pruning", sparsity, reached, "the policy's safeguards keep units",
                      _tolerance(masks, structure))
    row: dict[str, Any] = {"round": 1, "target_sparsity": sparsity, "sparsity": reached,
                           "weight_sparsity": _weight_sparsity(net, masks), "epochs": 0, **_val_metrics(net, data)}
    if finetune_epochs:
        res = _fit(net, data, finetune_epochs, opts, MaskKeeper(masks))
        budget.add_fit(res, "finetune")
        row.update({"epochs": res.epochs, "seconds": res.seconds, **_val_metrics(net, data)})
    method = "random" if score == "random" else "magnitude"
    return BaselineResult(method, net, masks, sparsity, reached, budget, structure, scope, score, [row],
                          config={"seed": seed, "finetune_epochs": finetune_epochs,
                                  "ignored_layers": list(ignored_layers)})


def random_prune(net: nn.Module, sparsity: float, *, structure: str = "weight", scope: str = "global",
                 seed: int = 0, **kwargs) -> BaselineResult:
    """Random pruning (the control): :func:`one_shot` with seeded uniform importances."""
    return one_shot(net, sparsity, score="random", structure=structure, scope=scope, seed=seed, **kwargs)


# ----------------------------------------------------------------- IMP (Han et al.)
def iterative_magnitude(net: nn.Module, data: DataBundle, sparsity: float, *, rounds: int = 5,
                        finetune_epochs: Union[int, Sequence[int]] = 2, score: str = "magnitude",
                        structure: str = "weight", scope: Optional[str] = None, seed: int = 0,
                        ignored_layers: Sequence[str] = (), fit_options: Optional[Mapping[str, Any]] = None,
                        base_budget: Optional[Budget] = None, inplace: bool = False) -> BaselineResult:
    """Iterative magnitude pruning with fine-tuning (Han et al. 2015).

    Round r prunes to the cumulative sparsity ``1 - (1 - target)^(r/rounds)`` (the same
    fraction of the remaining weights every round; nested masks), then fine-tunes
    ``finetune_epochs`` epochs (an int, or one per round) with the pruned weights held at
    zero. ``rounds=0`` prunes nothing (and warns).
    """
    structure, score = _structure_score(structure, score)
    scope = _check_choice(scope or ("global" if structure == "weight" else "layer"), SCOPES, "scope")
    sparsity = check_sparsity(sparsity)
    rounds = _check_count(rounds, "rounds")
    per_round = _finetune_list(finetune_epochs, rounds)
    opts = _fit_options(fit_options)
    opts.setdefault("seed", seed)
    net = _prepare(net, inplace, opts.get("device"))
    budget = copy.deepcopy(base_budget) if base_budget is not None else Budget()
    masks: Optional[Masks] = None
    history: list[dict] = []
    round_seed = seed
    for r, target in enumerate(geometric_schedule(sparsity, rounds) if rounds else [], start=1):
        t0 = time.perf_counter()
        masks = _masks_for(net, score, structure, scope, target, round_seed + r, ignored_layers, previous=masks)
        masks.apply(net)
        budget.prune_seconds += time.perf_counter() - t0
        row: dict[str, Any] = {"round": r, "target_sparsity": target, "sparsity": _reached(masks, structure),
                               "weight_sparsity": _weight_sparsity(net, masks), "epochs": 0}
        if per_round[r - 1]:
            res = _fit(net, data, per_round[r - 1], opts, MaskKeeper(masks))
            budget.add_fit(res, "finetune")
            row.update({"epochs": res.epochs, "seconds": res.seconds})
        row.update(_val_metrics(net, data))
        history.append(row)
    if masks is None:
        masks = Masks.ones(net)
        _warn_reached("iterative magnitude pruning", sparsity, 0.0, "rounds=0 prunes nothing")
        reached = 0.0
    else:
        reached = _reached(masks, structure)
        _warn_reached("iterative magnitude pruning", sparsity, reached, "the policy's safeguards keep units",
                      _tolerance(masks, structure))
    return BaselineResult("imp", net, masks, sparsity, reached, budget, structure, scope, score, history,
                          config={"rounds": rounds, "finetune_epochs": per_round, "seed": seed,
                                  "ignored_layers": list(ignored_layers)})


# ----------------------------------------------------------------- lottery tickets
def _lottery_rates(sizes: dict[str, int], out_name: str, target: Optional[float], rounds: int, rate: float,
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


def _schedule_plan(sizes: dict[str, int], out_name: str, schedule: Sequence[float],
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


def check_schedule(schedule: Sequence[float]) -> list[float]:
    """A lottery / IMP sparsity schedule: a non-empty, strictly increasing list of sparsities in [0, 1)."""
    values = [check_sparsity(s) for s in schedule]
    if not values or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"schedule must be a non-empty, strictly increasing list of sparsities in (0, 1), "
                         f"got {list(schedule)!r}")
    return values


def _tensor_digest(state: Optional[Mapping[str, torch.Tensor]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state or {}):
        t = state[k].detach().to("cpu").contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


class _RoundCache:
    """The trained network and masks after each lottery round, on disk, shared by calls that
    walk the same trajectory (same init, trained state, seed, options and schedule prefix).

    Files are written atomically (safetensors, no pickle); a round is reused only when its
    stored plan equals this call's plan up to that round, so a changed schedule never reads
    a stale round. A lock file per round keeps two processes from training the same round:
    the second one waits for the first one's file (or takes over when the owner died).
    """

    def __init__(self, root: Path, identity: dict) -> None:
        import hashlib
        import json as _json

        self.identity = identity
        key = hashlib.sha256(_json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = Path(root) / key

    def _file(self, r: int) -> Path:
        return self.dir / f"round{r}.safetensors"

    def load(self, r: int, plan: list) -> Optional[tuple[dict, Masks, dict, list]]:
        from ..runs import RunError, load_checkpoint

        path = self._file(r)
        if not path.is_file():
            return None
        try:
            tensors, meta = load_checkpoint(path)
        except RunError as exc:
            warnings.warn(f"ignoring the unreadable lottery round cache {path}: {exc}")
            return None
        stored = meta.get("plan") or []
        if len(stored) != r or any(abs(a - b) > 1e-12 for x, y in zip(stored, plan[:r]) for a, b in zip(x, y)):
            return None
        state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
        masks = Masks.from_tensors({k[len("mask."):]: v for k, v in tensors.items() if k.startswith("mask.")})
        return state, masks, dict(meta.get("budget") or {}), list(meta.get("history") or [])

    def save(self, r: int, plan: list, net: nn.Module, masks: Masks, budget: "Budget", history: list) -> None:
        from ..runs import save_checkpoint

        tensors = {f"state.{k}": v for k, v in net.state_dict().items()}
        tensors.update({f"mask.{k}": v for k, v in masks.to_tensors().items()})
        save_checkpoint(self._file(r), tensors, {"plan": [list(x) for x in plan[:r]], "budget": asdict(budget),
                                                 "history": history, "identity": self.identity})

    def claim(self, r: int, plan: list, timeout: float = 24 * 3600.0):
        """Wait until round ``r`` is cached (returns it) or this process owns its lock (returns None)."""
        import os

        self.dir.mkdir(parents=True, exist_ok=True)
        lock = self.dir / f"round{r}.lock"
        t0 = time.monotonic()
        while True:
            hit = self.load(r, plan)
            if hit is not None:
                return hit
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as fh:
                    fh.write(str(os.getpid()))
                return None
            except FileExistsError:
                try:
                    owner = int(lock.read_text() or "0")
                    os.kill(owner, 0)  # raises if the owner is gone
                except (ValueError, ProcessLookupError, FileNotFoundError):
                    lock.unlink(missing_ok=True)  # stale: its owner died
                    continue
                except PermissionError:
                    pass
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"waited {timeout:.0f} s for lottery round {r} in {self.dir}")
                time.sleep(1.0)

    def release(self, r: int) -> None:
        (self.dir / f"round{r}.lock").unlink(missing_ok=True)


def lottery_ticket(net: nn.Module, data: DataBundle, *, sparsity: Optional[float] = None, rounds: int = 5,
                   rate: float = 0.2, output_rate: Optional[float] = None, train_epochs: int = 10,
                   rewind_epoch: int = 0, scope: str = "layer", trained_state: Optional[dict] = None,
                   seed: int = 0, ignored_layers: Sequence[str] = (), fit_options: Optional[Mapping[str, Any]] = None,
                   base_budget: Optional[Budget] = None, inplace: bool = False,
                   schedule: Optional[Sequence[float]] = None,
                   cache_dir: Optional[Union[str, Path]] = None) -> BaselineResult:
    """Lottery-ticket iterative magnitude pruning with rewinding (Frankle & Carbin 2019).

    ``net`` is the network *at initialisation*; its weights are stored as ``init``. The
    dense network is trained ``train_epochs`` epochs, or ``trained_state`` is loaded (the
    same network already trained from this init; its cost belongs in ``base_budget``). The
    weights at the end of epoch ``rewind_epoch`` are stored as ``rewind``
    (``rewind_epoch=0``: the init itself). Each round prunes ``rate`` of the remaining
    weights of every layer (the output layer at ``output_rate``, default half the rate;
    ``scope="global"`` ranks the other layers together), rewinds the kept weights to
    ``rewind`` and retrains ``train_epochs - rewind_epoch`` epochs with the pruned weights
    held at zero. With a ``sparsity`` (of all candidate weights) the per-round rate is
    solved so that ``rounds`` rounds reach it exactly. A ``schedule`` (the candidate-weight
    sparsity after each round, increasing) replaces ``sparsity`` / ``rounds`` / ``rate``:
    each round's rate is solved to reach its entry (the output layer keeping its ratio).

    ``cache_dir`` stores every round (trained weights, masks, budget) so that calls whose
    schedules share a prefix, e.g. the lottery tickets of a study's operating points
    ``4x, 8x, 16x`` walked as one trajectory, train each shared round once. The budget of
    the result counts every round the ticket needed, cached or not.
    """
    scope = _check_choice(scope, SCOPES, "scope")
    rounds = _check_count(rounds, "rounds")
    train_epochs = _check_count(train_epochs, "train_epochs", 1)
    rewind_epoch = _check_count(rewind_epoch, "rewind_epoch")
    if rewind_epoch >= train_epochs:
        raise ValueError(f"rewind_epoch ({rewind_epoch}) must be smaller than train_epochs ({train_epochs})")
    if schedule is not None:
        schedule = check_schedule(schedule)
        if sparsity is not None and abs(check_sparsity(sparsity) - schedule[-1]) > 1e-9:
            raise ValueError(f"sparsity={sparsity} disagrees with the schedule's last entry {schedule[-1]}; "
                             "give one of them")
        sparsity, rounds = schedule[-1], len(schedule)
    if sparsity is not None:
        sparsity = check_sparsity(sparsity)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < float(rate) < 1.0:
        raise ValueError(f"rate must lie in (0, 1), got {rate!r}")
    if output_rate is not None and not 0.0 <= float(output_rate) < 1.0:
        raise ValueError(f"output_rate must lie in [0, 1), got {output_rate!r}")
    opts = _fit_options(fit_options)
    opts.setdefault("seed", seed)
    net = _prepare(net, inplace, opts.get("device"))
    budget = copy.deepcopy(base_budget) if base_budget is not None else Budget()
    stored: dict[str, dict[str, torch.Tensor]] = {"init": _state(net)}
    steps_per_epoch = len(Batches(data.train, opts.get("batch_size", 128)))

    def snapshot_at(epoch: int) -> MaskKeeper:
        def take(m: nn.Module, step: int) -> None:
            if step == epoch * steps_per_epoch:
                stored["rewind"] = _state(m)
        return MaskKeeper(None, on_step=take)

    if trained_state is None:
        res = _fit(net, data, train_epochs, opts, snapshot_at(rewind_epoch) if rewind_epoch else None)
        budget.add_fit(res, "train")
    else:
        if rewind_epoch:  # replay the first epochs from the init (same seed and data order) to get them
            probe = copy.deepcopy(net)
            res = _fit(probe, data, rewind_epoch, opts, snapshot_at(rewind_epoch))
            budget.add_fit(res, "train")
            del probe
        net.load_state_dict(trained_state)
    if rewind_epoch == 0:
        stored["rewind"] = stored["init"]
    elif "rewind" not in stored:
        raise RuntimeError(f"training stopped before epoch {rewind_epoch}: no rewind weights were stored")
    candidates = _candidates(net, "weight", ignored_layers)
    out_name = output_layer(net)
    layers = dict(prunable_layers(net))
    sizes = {n: layers[n].weight.numel() for n in candidates}
    ratio = 0.5 if output_rate is None else float(output_rate) / float(rate)
    if schedule is not None:
        plan = _schedule_plan(sizes, out_name, schedule, ratio)
        p_hidden, p_out = plan[0]  # the first round's rates (later rounds differ)
    else:
        p_hidden, p_out = _lottery_rates(sizes, out_name, sparsity, rounds, float(rate), output_rate)
        plan = [(1.0 - (1.0 - p_hidden) ** r, 1.0 - (1.0 - p_out) ** r) for r in range(1, rounds + 1)]
    history: list[dict] = [{"round": 0, "target_sparsity": 0.0, "sparsity": 0.0, "epochs": budget.train_epochs,
                            **_val_metrics(net, data)}]
    masks: Optional[Masks] = None
    cache = None
    start = 0
    rounds_budget = Budget()          # every round so far (cumulative; what the cache stores)
    round_rows: list[dict] = []

    def take(hit) -> None:
        nonlocal masks, rounds_budget, round_rows
        state, masks, cached_budget, cached_rows = hit
        net.load_state_dict({k: v.to(next(net.parameters()).device) for k, v in state.items()})
        rounds_budget = Budget(**{k: v for k, v in cached_budget.items() if k in Budget.__dataclass_fields__})
        round_rows = list(cached_rows)

    if cache_dir is not None and rounds > 0:
        cache = _RoundCache(Path(cache_dir), {
            "init": _tensor_digest(stored["init"]), "trained": _tensor_digest(_state(net)),
            "rewind": _tensor_digest(stored["rewind"]), "seed": seed, "train_epochs": train_epochs,
            "rewind_epoch": rewind_epoch, "scope": scope, "ratio": ratio, "ignored": sorted(ignored_layers),
            "fit": {k: v for k, v in opts.items() if k not in ("progress", "device")}})
        for r in range(rounds, 0, -1):
            hit = cache.load(r, plan)
            if hit is not None:
                take(hit)
                start = r
                break
    for r in range(start + 1, rounds + 1):
        if cache is not None:
            hit = cache.claim(r, plan)
            if hit is not None:  # another process trained this round meanwhile
                take(hit)
                continue
        t0 = time.perf_counter()
        s_hidden, s_out = plan[r - 1]
        special = {out_name: s_out} if out_name in sizes else {}
        if scope == "layer":
            special = {n: (s_out if n == out_name else s_hidden) for n in candidates}
        scores = net_weight_scores(net, "magnitude", layers=candidates)
        masks = select_masks(net, scores, s_hidden, structure="weight", scope=scope, ignored_layers=ignored_layers,
                             previous=masks, layer_sparsity=special)
        net.load_state_dict(stored["rewind"])
        masks.apply(net)
        rounds_budget.prune_seconds += time.perf_counter() - t0
        try:
            res = _fit(net, data, train_epochs - rewind_epoch, opts, MaskKeeper(masks))
            rounds_budget.add_fit(res, "finetune")
            round_rows.append({"round": r, "target_sparsity": _weight_share(sizes, s_hidden, s_out, out_name),
                               "sparsity": masks.sparsity(), "weight_sparsity": _weight_sparsity(net, masks),
                               "epochs": res.epochs, "seconds": res.seconds, **_val_metrics(net, data)})
            if cache is not None:
                cache.save(r, plan, net, masks, rounds_budget, round_rows)
        finally:
            if cache is not None:
                cache.release(r)
    for key in ("finetune_epochs", "finetune_seconds", "prune_seconds", "steps"):
        setattr(budget, key, getattr(budget, key) + getattr(rounds_budget, key))
    history.extend(round_rows)
    ticket = None
    if masks is not None:  # the rewound weights under the final masks (the last round may be a cache hit)
        probe = copy.deepcopy(net)
        probe.load_state_dict(stored["rewind"])
        masks.apply(probe)
        ticket = _state(probe)
        del probe
    if masks is None:
        masks = Masks.ones(net)
        reached, target = 0.0, sparsity if sparsity is not None else 0.0
        _warn_reached("lottery ticket", target, 0.0, "rounds=0 prunes nothing")
    else:
        reached = masks.sparsity()
        target = sparsity if sparsity is not None else history[-1]["target_sparsity"]
        _warn_reached("lottery ticket", target, reached,
                      f"{rounds} rounds at rate {p_hidden:.4f}, output layer {p_out:.4f}", _tolerance(masks, "weight"))
    return BaselineResult("lottery", net, masks, float(target), reached, budget, "weight", scope, "magnitude",
                          history, stored=stored, ticket=ticket,
                          config={"rounds": rounds, "rate": p_hidden, "output_rate": p_out,
                                  "train_epochs": train_epochs, "rewind_epoch": rewind_epoch, "seed": seed,
                                  "ignored_layers": list(ignored_layers)})


def _weight_share(sizes: dict[str, int], s_hidden: float, s_out: float, out_name: str) -> float:
    total = sum(sizes.values())
    return sum(size * (s_out if n == out_name else s_hidden) for n, size in sizes.items()) / max(total, 1)


# ----------------------------------------------------------------- gradual (Zhu & Gupta)
def gradual_magnitude(net: nn.Module, data: DataBundle, sparsity: float, *, epochs: int = 10,
                      initial_sparsity: float = 0.0, begin_epoch: float = 0.0, end_epoch: Optional[float] = None,
                      pruning_steps: int = 20, scope: Optional[str] = None, structure: str = "weight",
                      score: str = "magnitude", seed: int = 0, ignored_layers: Sequence[str] = (),
                      fit_options: Optional[Mapping[str, Any]] = None, base_budget: Optional[Budget] = None,
                      budget_kind: str = "finetune", inplace: bool = False) -> BaselineResult:
    """Gradual magnitude pruning during training (Zhu & Gupta 2017), through ``step_hook``.

    Trains ``epochs`` epochs; between ``begin_epoch`` and ``end_epoch`` (default 3/4 of the
    training) the masks are recomputed at ``pruning_steps + 1`` evenly spaced optimiser steps
    at the cubic sparsity ``s_f + (s_i - s_f)(1 - progress)^3`` (nested masks), and every
    step holds the pruned weights at zero. ``budget_kind`` says whether these epochs count
    as ``"train"`` (pruning from scratch) or ``"finetune"`` (pruning a trained network). A
    schedule that ends after the training warns with the sparsity it reached.
    """
    structure, score = _structure_score(structure, score)
    scope = _check_choice(scope or ("global" if structure == "weight" else "layer"), SCOPES, "scope")
    sparsity = check_sparsity(sparsity)
    initial_sparsity = check_sparsity(initial_sparsity)
    epochs = _check_count(epochs, "epochs", 1)
    pruning_steps = _check_count(pruning_steps, "pruning_steps", 1)
    budget_kind = _check_choice(budget_kind, ("train", "finetune"), "budget_kind")
    if initial_sparsity > sparsity:
        raise ValueError(f"initial_sparsity ({initial_sparsity}) exceeds the target sparsity ({sparsity})")
    opts = _fit_options(fit_options)
    opts.setdefault("seed", seed)
    net = _prepare(net, inplace, opts.get("device"))
    budget = copy.deepcopy(base_budget) if base_budget is not None else Budget()
    steps_per_epoch = len(Batches(data.train, opts.get("batch_size", 128)))
    total_steps = epochs * steps_per_epoch
    end_epoch = 0.75 * epochs if end_epoch is None else float(end_epoch)
    if not 0.0 <= float(begin_epoch) <= end_epoch:
        raise ValueError(f"need 0 <= begin_epoch <= end_epoch, got begin {begin_epoch}, end {end_epoch}")
    t_begin, t_end = int(round(begin_epoch * steps_per_epoch)), int(round(end_epoch * steps_per_epoch))
    prune_at = sorted({t_begin + int(round(i * (t_end - t_begin) / pruning_steps)) for i in range(pruning_steps + 1)})
    history: list[dict] = []

    def prune_to(m: nn.Module, step: int) -> None:
        s = cubic_sparsity(step, t_begin, t_end, sparsity, initial_sparsity)
        keeper.masks = _masks_for(m, score, structure, scope, s, seed, ignored_layers, previous=keeper.masks)
        history.append({"step": step, "epoch": step / steps_per_epoch, "target_sparsity": s,
                        "sparsity": _reached(keeper.masks, structure)})

    def on_step(m: nn.Module, step: int) -> None:
        if step in prune_set:
            prune_to(m, step)

    keeper = MaskKeeper(None, on_step=on_step)
    prune_set = set(prune_at)
    t0 = time.perf_counter()
    if 0 in prune_set:
        prune_to(net, 0)
        keeper.masks.apply(net)
    budget.prune_seconds += time.perf_counter() - t0
    res = _fit(net, data, epochs, opts, keeper)
    budget.add_fit(res, budget_kind)
    masks = keeper.masks if keeper.masks is not None else Masks.ones(net)
    reached = _reached(masks, structure) if keeper.masks is not None else 0.0
    why = (f"the schedule ends at epoch {end_epoch:g}, after the {epochs} training epochs" if t_end > total_steps
           else "the policy's safeguards keep units")
    _warn_reached("gradual magnitude pruning", sparsity, reached, why, _tolerance(masks, structure))
    if history:
        history[-1].update(_val_metrics(net, data))
    return BaselineResult("gradual", net, masks, sparsity, reached, budget, structure, scope, score, history,
                          config={"epochs": epochs, "initial_sparsity": initial_sparsity, "begin_epoch": begin_epoch,
                                  "end_epoch": end_epoch, "pruning_steps": pruning_steps, "seed": seed,
                                  "ignored_layers": list(ignored_layers)})


# ----------------------------------------------------------------- budgets
def allocate_budget(method: str, total_epochs: int, base_epochs: int = 0, rounds: int = 1,
                    rewind_epoch: int = 0) -> dict[str, Any]:
    """Spread a total epoch budget (dense training included) over a method's phases.

    ``base_epochs`` is what the dense network already cost. Returns the keyword arguments
    that make the method use ``total_epochs``: ``finetune_epochs`` (one-shot: one number;
    ``imp``: one per round, the remainder to the last rounds), ``train_epochs``
    (``lottery``: every round retrains from the rewind point, so
    ``base + rounds * (train_epochs - rewind_epoch) <= total``) or ``epochs`` (``gradual``).
    """
    key = _check_choice(method, list(METHODS), "method")
    total_epochs = _check_count(total_epochs, "total_epochs")
    base_epochs = _check_count(base_epochs, "base_epochs")
    rounds = _check_count(rounds, "rounds")
    rewind_epoch = _check_count(rewind_epoch, "rewind_epoch")
    left = total_epochs - base_epochs
    if left < 0:
        raise ValueError(f"the budget of {total_epochs} epochs is below the {base_epochs} epochs the dense network "
                         "already used; give a budget of at least that")
    if key in ("magnitude", "random"):
        return {"finetune_epochs": left}
    if key == "gradual":
        if left < 1:
            raise ValueError(f"gradual pruning needs at least 1 epoch beyond the dense {base_epochs}; give a budget "
                             f">= {base_epochs + 1}")
        return {"epochs": left}
    if rounds < 1:
        raise ValueError(f"{key} needs rounds >= 1 to spend a budget")
    if key == "imp":
        base, extra = divmod(left, rounds)
        return {"finetune_epochs": [base + (1 if r >= rounds - extra else 0) for r in range(rounds)]}
    if rewind_epoch:
        left -= rewind_epoch  # replaying the first epochs to reach the rewind point costs them once
    per_round, extra = divmod(left, rounds)
    if per_round < 1:
        raise ValueError(f"lottery needs at least {rounds + rewind_epoch} epochs beyond the dense {base_epochs} "
                         f"({rounds} rounds); give a budget >= {base_epochs + rounds + rewind_epoch}")
    if extra:
        warnings.warn(f"lottery: {extra} of the {total_epochs} budget epochs cannot be spread evenly over {rounds} "
                      "rounds and stay unused", RuntimeWarning, stacklevel=2)
    return {"train_epochs": per_round + rewind_epoch}


# ----------------------------------------------------------------- torch.nn.utils.prune
def to_torch_prune(net: nn.Module, masks: Masks) -> nn.Module:
    """Attach masks as ``torch.nn.utils.prune`` reparametrisations (``weight_orig * weight_mask``),
    for code built on PyTorch's pruning utilities; ``prune.remove`` makes them permanent."""
    from torch.nn.utils import prune as tprune

    layers = dict(prunable_layers(net))
    for name, m in masks.weight.items():
        tprune.custom_from_mask(layers[name], "weight", m.to(layers[name].weight.device))
    for name, m in masks.bias.items():
        if layers[name].bias is not None:
            tprune.custom_from_mask(layers[name], "bias", m.to(layers[name].bias.device))
    return net


# ----------------------------------------------------------------- CLI (pyrocompress prune --method ...)
class _DefaultStr(str):
    """The parser default of ``--score``: lets the baselines tell it from an explicit ``--score``."""


class _DefaultInt(int):
    """The parser default of ``--finetune-epochs``: lets each method choose its own default."""


def _add_cli_arguments(p) -> None:
    """Baseline arguments of ``pyrocompress prune`` (an ARGUMENT_HOOKS entry of prune.cli)."""
    g = p.add_argument_group("deterministic baselines (--method magnitude|random|imp|lottery|gradual)")
    g.add_argument("--scope", default=None, choices=list(SCOPES),
                   help="rank globally (default) or within each layer (same as --per-layer)")
    g.add_argument("--rounds", type=int, default=None,
                   help="imp / lottery: pruning rounds (default imp 5, lottery 5)")
    g.add_argument("--rewind-epoch", type=int, default=0,
                   help="lottery: rewind kept weights to the end of this epoch (0: the initial weights)")
    g.add_argument("--rate", type=float, default=0.2,
                   help="lottery without --sparsity: fraction of the remaining weights pruned per round "
                        "(output layer at half rate)")
    g.add_argument("--train-epochs", type=int, default=None,
                   help="lottery: epochs of every retraining from the rewind point (default: the run's epochs)")
    g.add_argument("--budget-epochs", type=int, default=None,
                   help="total epoch budget, the run's dense training included: the method's fine-tuning / "
                        "retraining epochs are set so that every method uses the same total")
    g.add_argument("--pruning-steps", type=int, default=20, help="gradual: number of mask updates")
    p.set_defaults(score=_DefaultStr(p.get_default("score") or "snr"),
                   finetune_epochs=_DefaultInt(p.get_default("finetune_epochs") or 0))


def _cli_method(method: str) -> Callable:
    def run_method(run, data, args):
        return _run_cli(method, run, data, args)
    run_method.__name__ = f"baseline_{method}"
    run_method.__doc__ = METHODS[method]
    return run_method


def register_prune_cli(methods: dict, hooks: list) -> None:
    """Add the baseline methods and their arguments to ``pyrocompress prune`` (idempotent)."""
    for name in METHODS:
        methods.setdefault(name, _cli_method(name))
    if _add_cli_arguments not in hooks:
        hooks.append(_add_cli_arguments)


def _initial_network(run, data) -> nn.Module:
    """The run's network at initialisation, rebuilt from its seed exactly as ``training.train`` built it."""
    from ..nn.arch import describe
    from ..nn.zoo import build_model
    from ..runs import RunError

    train = run.config.get("train", {})
    if "model" not in train:
        raise RunError(f"{run.path} records no model name: the lottery ticket cannot rebuild its initial weights")
    torch.manual_seed(int(train.get("seed", 0)))
    net = build_model(train["model"], data.input_shape, data.num_classes, **dict(train.get("model_options") or {}))
    if describe(net) != describe(run.net):
        raise RunError(f"the network rebuilt from {run.path}'s configuration differs from its checkpoint; the "
                       "lottery ticket needs the run's initial weights")
    return net


def _run_cli(method: str, run, data, args):
    from ..runs import save_checkpoint
    from .cli import PruneOutcome, _stage_row, _val, fit_options_of
    from .shrink import shrink

    method = check_method_fits(method, run.is_bayesian)
    if getattr(args, "threshold", None) is not None or getattr(args, "auto_threshold", False):
        raise ValueError(f"--method {method} selects by --sparsity; --threshold and --auto-threshold belong to "
                         "--method score (a posterior score)")
    score_given = not isinstance(args.score, _DefaultStr)
    finetune_given = not isinstance(args.finetune_epochs, _DefaultInt)
    if args.scope is not None and args.per_layer and args.scope != "layer":
        raise ValueError("--per-layer contradicts --scope global; give one of them")
    structure = resolve_structure(args.structure)
    scope = args.scope or ("layer" if args.per_layer else _default_scope(method, structure))
    for name in ("rounds", "finetune_epochs", "rewind_epoch", "train_epochs", "budget_epochs"):
        value = getattr(args, name, None)
        if value is not None and int(value) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if run.is_bayesian:  # method == "magnitude": the posterior mean |mu| through the Bayesian path
        if score_given and str(args.score) != "magnitude":
            raise ValueError(f"--method magnitude ranks by the posterior mean |mu|; for --score {args.score} use "
                             "--method score")
        bayes_args = copy.copy(args)
        bayes_args.score = "magnitude"
        if args.scope is not None:
            bayes_args.per_layer = scope == "layer"
        outcome = methods_of_cli()["score"](run, data, bayes_args)
        outcome.extra.update({"method": "magnitude", "ranked_by": "posterior mean |mu|"})
        return outcome
    score = str(args.score) if score_given else ("random" if method == "random" else "magnitude")
    if method == "random" and score != "random":
        raise ValueError(f"--method random ranks randomly; drop --score {score} or use --method magnitude")
    if method in ("imp", "lottery", "gradual") and score not in ("magnitude", "l1", "l2", "norm"):
        check_score_fits(score, bayesian=False)
        raise ValueError(f"--method {method} is magnitude-based; valid scores: magnitude, l1, l2")
    check_score_fits(score, bayesian=False)
    if method == "lottery" and structure != "weight":
        raise ValueError("--method lottery prunes single weights; use --structure weight (or --method imp for "
                         "structured iterative pruning)")
    sparsity = args.sparsity
    if sparsity is None and method != "lottery":
        raise ValueError(f"--method {method} needs --sparsity (a fraction in [0, 1))")
    train_cfg = run.config.get("train", {})
    base_epochs = int(run.metrics.get("epochs", train_cfg.get("epochs", 0)) or 0)
    base = Budget(train_epochs=base_epochs, train_seconds=float(run.metrics.get("train_seconds", 0.0) or 0.0))
    opts = {k: v for k, v in fit_options_of(run, args).items() if k in FIT_OPTIONS}
    if train_cfg.get("lr_schedule"):
        opts["lr_schedule"] = train_cfg["lr_schedule"]
    opts["seed"] = args.seed
    rounds = args.rounds if args.rounds is not None else 5
    ignored = tuple(args.ignore or ())
    split = _val(data)
    t0 = time.perf_counter()
    history = [_stage_row("dense", None, None, run.net, split, args.eval_samples, args.seed, 0.0)]
    budget_opts: dict[str, Any] = {}
    if args.budget_epochs is not None:
        budget_opts = allocate_budget(method, args.budget_epochs, base_epochs, rounds, args.rewind_epoch)
    if method in ("magnitude", "random"):
        ft = budget_opts.get("finetune_epochs", int(args.finetune_epochs))
        result = one_shot(run.net, sparsity, score=score, structure=structure, scope=scope, seed=args.seed,
                          ignored_layers=ignored, data=data, finetune_epochs=ft, fit_options=opts, base_budget=base)
    elif method == "imp":
        ft = budget_opts.get("finetune_epochs", int(args.finetune_epochs) if finetune_given else 2)
        result = iterative_magnitude(run.net, data, sparsity, rounds=rounds, finetune_epochs=ft, score=score,
                                     structure=structure, scope=scope, seed=args.seed, ignored_layers=ignored,
                                     fit_options=opts, base_budget=base)
    elif method == "lottery":
        if finetune_given and args.train_epochs is None:
            raise ValueError("--method lottery retrains from the rewind point each round: give --train-epochs "
                             "(default: the run's epochs), not --finetune-epochs")
        epochs = budget_opts.get("train_epochs", args.train_epochs or int(train_cfg.get("epochs", base_epochs)))
        result = lottery_ticket(_initial_network(run, data), data, sparsity=sparsity, rounds=rounds, rate=args.rate,
                                train_epochs=epochs, rewind_epoch=args.rewind_epoch, scope=scope,
                                trained_state=run.net.state_dict(), seed=args.seed, ignored_layers=ignored,
                                fit_options=opts, base_budget=base)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        kinds = ("init",) if args.rewind_epoch == 0 else ("init", "rewind")  # rewind 0: the init itself
        tensors = {f"{kind}.{k}": v.clone() for kind in kinds for k, v in result.stored[kind].items()}
        tensors.update({f"ticket.{k}": v.clone() for k, v in (result.ticket or {}).items()})
        save_checkpoint(out / "lottery.safetensors", tensors,
                        {"rewind_epoch": args.rewind_epoch, "rounds": rounds, "source_run": str(run.path)})
    else:
        epochs = budget_opts.get("epochs", int(args.finetune_epochs) if finetune_given
                                 else int(train_cfg.get("epochs", base_epochs) or 1))
        if epochs < 1:
            raise ValueError("--method gradual prunes during training: give --finetune-epochs >= 1")
        result = gradual_magnitude(run.net, data, sparsity, epochs=epochs, pruning_steps=args.pruning_steps,
                                   scope=scope, structure=structure, score=score, seed=args.seed,
                                   ignored_layers=ignored, fit_options=opts, base_budget=base)
    for row in result.history:
        label = f"step {row['step']}" if "step" in row else f"round {row.get('round', 1)}"
        history.append({"stage": label, **{k: v for k, v in row.items() if k not in ("round", "step")}})
    shrunk = shrink(result.net, masks=result.masks)
    history.append(_stage_row("pruned", None, None, shrunk.net, split, args.eval_samples, args.seed,
                              time.perf_counter() - t0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "masks.safetensors", result.masks.to_tensors(), {"method": method})
    extra = {"method": method, "score": score, "structure": structure, "scope": scope,
             "sparsity_target": result.target_sparsity, "mask_sparsity": result.sparsity,
             "budget": result.budget.to_dict(), "baseline": result.config, "units": shrunk.plan.summary()}
    return PruneOutcome(net=shrunk.net, history=history, extra=extra)


def _default_scope(method: str, structure: str) -> str:
    """Global ranking for single weights; per layer for lottery tickets (Frankle & Carbin's fully
    connected setting) and for units, whose raw norms are not comparable across layers of
    different fan-in (a global ranking by norm would empty the narrow-fan-in layers first)."""
    return "layer" if method == "lottery" or structure != "weight" else "global"


def methods_of_cli() -> dict:
    from .cli import METHODS as CLI_METHODS

    return CLI_METHODS
