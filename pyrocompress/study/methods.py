"""Method families of a study: one adapter per family, from a trained network to a pruned one.

Every adapter takes a :class:`TrialContext` (the loaded trained run, its data, its training
options, the trial's seed) and an operating point (a target compression ratio, or None for
methods that pick their own size) and returns a :class:`Pruned` network: a Bayesian model
with its guide, or a plain network, masked (zeros) or physically shrunk. The study then
measures every result with the same metrics.

Families (``family = ...`` in a ``[[methods]]`` table):

* ``dense``: the trained network itself (the reference every study has, at 1x);
* ``bayes``: the Bayesian network pruned by a posterior score (``score`` one of the score
  registry: snr, magnitude, norm, prob_nonzero, hdi, kl), unstructured or by neuron /
  kernel (``structure``), ranked globally or per layer (``scope``), optionally fine-tuned
  with SVI (``finetune_epochs``); structured results are physically shrunk;
* ``self_compress``: "Self-Compression in Bayesian Neural Networks": kernels and neurons
  ranked by the norm of their posterior mean and deleted, the network physically shrunk;
  ``mode = "oneshot"`` at each operating point, or ``mode = "iterative"`` (the posterior
  decides the size; one point, labelled ``auto``);
* ``magnitude``, ``random``, ``imp``, ``lottery``, ``gradual``: the baselines of
  :mod:`pyrocompress.prune.baselines` on the deterministic twin (``on = "bayesian"``
  runs ``magnitude`` / ``random`` on the posterior mean instead).

A target compression ratio c is reached as follows: unstructured methods prune the
fraction of the prunable weights that leaves 1/c of all parameters (biases are kept, so
slightly more than 1 - 1/c of the weights); structured ones search the unit sparsity whose
physically shrunk network has c times fewer parameters than the dense one (when the
safety rules, e.g. "the output layer keeps its units", stop short of c, the reached
ratio is what is recorded).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

__all__ = ["Family", "FAMILIES", "TrialContext", "Pruned", "validate_method", "method_kind", "run_method"]


@dataclass
class TrialContext:
    """What a method adapter gets: the trained run of its kind, the data, options, the trial seed."""

    data: Any                      # DataBundle
    run: Any                       # pyrocompress.runs.Run (Bayesian: .model/.guide; deterministic: .net)
    train: dict                    # TrainConfig values the run was trained with
    seed: int                      # the trial's seed (pruning randomness, fine-tuning order)
    device: Any = "cpu"
    initial_state: Optional[dict] = None   # the network's weights before training (lottery rewinding)
    grid: tuple = ()               # compression ratios of every operating point of this method
    method_seed: Optional[int] = None      # seed of the method on this network, shared by all its points
    cache_dir: Optional[Any] = None        # where work shared by several trials is kept (lottery rounds)


@dataclass
class Pruned:
    """A pruned network: Bayesian (model + guide) or plain (net); with the extra epochs it used."""

    net: Optional[nn.Module] = None
    model: Any = None
    guide: Any = None
    finetune_epochs: int = 0
    retrain_epochs: int = 0        # epochs of training from scratch that replace the dense training
    info: dict = field(default_factory=dict)

    @property
    def is_bayesian(self) -> bool:
        return self.model is not None


@dataclass(frozen=True)
class Family:
    """A method family: which trained network it starts from, its options with defaults, its adapter."""

    name: str
    kind: str                              # bayesian | deterministic | option (from the "on" option)
    defaults: dict
    choices: dict                          # option -> valid values (validated)
    run: Callable[[TrialContext, dict, Optional[float]], Pruned]
    description: str
    grid: Callable[[dict], bool] = lambda options: True

    def uses_grid(self, options: dict) -> bool:
        return self.grid(options)


class _OptionError(ValueError):
    def __init__(self, message: str, key: Optional[str] = None) -> None:
        super().__init__(message)
        self.key = key


def _check_int(options: dict, key: str, minimum: int) -> None:
    v = options.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _OptionError(f"option {key!r} must be an integer >= {minimum}, got {v!r}", key)


def _check_number(options: dict, key: str, lo: float = 0.0, hi: float = math.inf, open_lo: bool = False) -> None:
    v = options.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo < v if open_lo else lo <= v) or not v <= hi:
        raise _OptionError(f"option {key!r} must be a number in {'(' if open_lo else '['}{lo}, {hi}], got {v!r}", key)


def validate_method(family: str, options: dict) -> dict:
    """Options of a method with the family's defaults filled in; errors list the valid values."""
    if family not in FAMILIES:
        raise _OptionError(f"unknown method family {family!r}; valid families: {sorted(FAMILIES)}", "family")
    fam = FAMILIES[family]
    unknown = sorted(set(options) - set(fam.defaults))
    if unknown:
        raise _OptionError(f"unknown option {unknown[0]!r} for family {family!r}; valid options: "
                           f"{sorted(fam.defaults)}", unknown[0])
    out = dict(fam.defaults)
    out.update(options)
    for key, valid in fam.choices.items():
        value = out.get(key)
        if isinstance(value, str):
            value = value.lower().replace("-", "_")
            out[key] = value
        if value not in valid:
            what = {"score": "score", "structure": "structure", "scope": "scope"}.get(key, "value")
            raise _OptionError(f"unknown {what} {options.get(key)!r} for option {key!r}; valid: {list(valid)}", key)
    for key in ("finetune_epochs", "rounds", "max_rounds", "rewind_epoch", "begin_epoch"):
        if key in out and out[key] is not None:
            _check_int(out, key, 1 if key in ("rounds", "max_rounds") else 0)
    for key in ("tolerance", "min_gap"):
        if key in out:
            _check_number(out, key, 0.0, open_lo=key == "min_gap")
    if out.get("rate") is not None:
        _check_number(out, "rate", 0.0, 1.0, open_lo=True)
    if family in ("gradual", "lottery") and out.get("epochs") is not None:
        _check_int(out, "epochs", 1)
    return out


def method_kind(method) -> str:
    """``bayesian`` or ``deterministic``: which trained network a method starts from."""
    fam = FAMILIES[method.family]
    if fam.kind == "option":
        return method.options.get("on", "deterministic")
    return fam.kind


# ================================================================== helpers
def _fit_options(train: dict, bayesian: bool) -> dict:
    keys = ["batch_size", "lr", "optimizer"]
    if bayesian:
        keys += ["estimator", "kl_weight"]
    out = {k: train[k] for k in keys if train.get(k) is not None}
    if bayesian and "particles" in train:
        out["num_particles"] = train["particles"]
    return out


def _finetune(ctx: TrialContext, pruned: Pruned, epochs: int, masks=None) -> Pruned:
    """Fine-tune a pruned network for ``epochs`` (SVI for a Bayesian one), masks held at zero."""
    if epochs <= 0:
        return pruned
    from ..infer.fit import fit, fit_deterministic

    hook = masks.step_hook() if masks is not None else None
    if pruned.is_bayesian:
        fit(pruned.model, pruned.guide, ctx.data, epochs=epochs, seed=ctx.seed, device=ctx.device,
            step_hook=hook, **_fit_options(ctx.train, True))
    else:
        fit_deterministic(pruned.net, ctx.data, epochs=epochs, seed=ctx.seed, device=ctx.device,
                          step_hook=hook, **_fit_options(ctx.train, False))
    pruned.finetune_epochs += epochs
    return pruned


def _total_params(net: nn.Module) -> int:
    from ..metrics import parameter_counts

    return parameter_counts(net)["total"]["params"]


def _weight_sparsity_for(net: nn.Module, target: float) -> float:
    """The fraction of prunable weights to delete so that all parameters (biases stay) shrink ``target``-fold."""
    from ..metrics import parameter_counts

    total = parameter_counts(net)["total"]["params"]
    weights = sum(int(m.weight.numel()) for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    if weights == 0:
        raise ValueError("the network has no Linear or Conv2d weights to prune")
    keep = (total / target - (total - weights)) / weights
    return float(min(max(1.0 - keep, 0.0), 0.999))


def _structured_search(dense_params: int, target: float, make: Callable[[float], Any],
                       size_of: Callable[[Any], int], iters: int = 14) -> tuple[Any, float, dict]:
    """Bisect the unit sparsity s so that dense_params / size_of(make(s)) reaches ``target``.

    Returns the candidate at the smallest s that reaches it (or the largest s tried when
    none does), the unit sparsity, and search info.
    """
    lo, hi = 0.0, 0.995
    best = make(hi)
    best_s = hi
    reached_max = dense_params / max(size_of(best), 1)
    if reached_max < target:
        return best, best_s, {"target_reached": False, "reached_compression": reached_max}
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        cand = make(mid)
        if dense_params / max(size_of(cand), 1) >= target:
            hi, best, best_s = mid, cand, mid
        else:
            lo = mid
    return best, best_s, {"target_reached": True, "unit_sparsity": best_s}


# ================================================================== adapters
def _run_dense(ctx: TrialContext, options: dict, point: Optional[float]) -> Pruned:
    """The trained network, unchanged."""
    if ctx.run.is_bayesian:
        return Pruned(model=ctx.run.model, guide=ctx.run.guide)
    return Pruned(net=ctx.run.net)


def _shrunk_bayesian(model, guide, masks) -> tuple[Any, Any]:
    from ..prune.shrink import shrink

    out = shrink(model, guide, masks=masks, warn=False)
    return out.model, out.guide


def _run_bayes(ctx: TrialContext, options: dict, point: Optional[float]) -> Pruned:
    """Prune the Bayesian network by a posterior score at the target compression."""
    from ..prune.policy import PrunePolicy

    model, guide = ctx.run.model, ctx.run.guide
    structure = options["structure"]
    base = dict(score=options["score"], structure=structure, per_layer=options["scope"] == "layer",
                reduction=options.get("reduction"), score_options=dict(options.get("score_options") or {}))
    if structure == "weight":
        from ..infer.guides import posterior_mean_network

        sparsity = _weight_sparsity_for(posterior_mean_network(model, guide), point)
        masks = PrunePolicy(sparsity=sparsity, **base).masks(model, guide)
        masks.apply(model, guide)
        pruned = Pruned(model=model, guide=guide, info={"unit_sparsity": None})
        return _finetune(ctx, pruned, options["finetune_epochs"], masks)
    from ..infer.guides import posterior_mean_network

    dense_params = _total_params(posterior_mean_network(model, guide))

    def make(s: float):
        masks = PrunePolicy(sparsity=s, **base).masks(model, guide)
        m2, g2 = copy.deepcopy(model), copy.deepcopy(guide)
        masks.apply(m2, g2)
        return _shrunk_bayesian(m2, g2, masks)

    (small, small_guide), s, info = _structured_search(
        dense_params, point, make, lambda mg: _total_params(posterior_mean_network(*mg)))
    pruned = Pruned(model=small, guide=small_guide, info=info)
    return _finetune(ctx, pruned, options["finetune_epochs"])


def _run_self_compress(ctx: TrialContext, options: dict, point: Optional[float]) -> Pruned:
    """Self-compression: kernels / neurons by posterior-mean norm, physically deleted.

    ``oneshot``: delete to the operating point (structured search), optionally fine-tune;
    ``iterative``: :func:`pyrocompress.prune.selfcompress.self_compress` with the automatic
    per-layer threshold, fine-tuning ``finetune_epochs`` per round, until nothing more is
    redundant or the validation accuracy drops more than ``tolerance`` points.
    """
    if options["mode"] == "oneshot":
        opts = dict(options, reduction=None, score_options={})
        return _run_bayes(ctx, opts, point)
    from ..prune.selfcompress import self_compress

    epochs = options["finetune_epochs"] or 2
    fit_options = _fit_options(ctx.train, True)
    fit_options["device"] = str(ctx.device)
    result = self_compress(ctx.run.model, ctx.run.guide, ctx.data, score=options["score"],
                           structure=options["structure"], iterative=True, auto=True,
                           per_layer=options["scope"] == "layer", tolerance=options["tolerance"],
                           max_rounds=options["max_rounds"], finetune_epochs=epochs, seed=ctx.seed,
                           fit_options=fit_options)
    rounds = sum(1 for row in result.history if row.get("round", 0) >= 1)
    return Pruned(model=result.model, guide=result.guide, finetune_epochs=rounds * epochs,
                  info={"rounds": rounds, "stop_reason": result.stop_reason,
                        "history": [{k: v for k, v in row.items() if not isinstance(v, dict)}
                                    for row in result.history]})


def _baseline_net(ctx: TrialContext) -> nn.Module:
    if ctx.run.is_bayesian:
        from ..infer.guides import posterior_mean_network

        return posterior_mean_network(ctx.run.model, ctx.run.guide)
    return ctx.run.net


def _shrink_net(net: nn.Module, masks) -> nn.Module:
    from ..prune.shrink import shrink

    return shrink(net, masks=masks, warn=False).net


def _run_baseline(ctx: TrialContext, options: dict, point: Optional[float], family: str) -> Pruned:
    """A magnitude-pruning baseline of :mod:`pyrocompress.prune.baselines` on the deterministic twin
    (or on the posterior-mean network with ``on = "bayesian"``)."""
    from ..prune import baselines as bl

    net = _baseline_net(ctx)
    structure = options.get("structure", "weight")
    fit_options = {k: v for k, v in _fit_options(ctx.train, False).items() if k in bl.FIT_OPTIONS}
    fit_options["device"] = str(ctx.device)
    common = {"seed": ctx.seed, "fit_options": fit_options}
    ft = options.get("finetune_epochs", 0)

    def call(sparsity: float):
        if family == "magnitude":
            return bl.one_shot(net, sparsity, score=options["score"], structure=structure, scope=options["scope"],
                               data=ctx.data if ft else None, finetune_epochs=ft, **common)
        if family == "random":
            return bl.random_prune(net, sparsity, structure=structure, scope=options["scope"],
                                   data=ctx.data if ft else None, finetune_epochs=ft, **common)
        if family == "imp":
            return bl.iterative_magnitude(net, ctx.data, sparsity, rounds=options["rounds"], finetune_epochs=ft,
                                          structure=structure, scope=options["scope"], **common)
        if family == "lottery":
            epochs = options.get("epochs") or int(ctx.train["epochs"])
            walk: dict = {"sparsity": sparsity, "rounds": options["rounds"]}
            extra = common
            if options["schedule"] == "trajectory":
                walk = {"schedule": trajectory_schedule(net, ctx.grid, point, options["rounds"]),
                        "cache_dir": None if ctx.cache_dir is None else Path(ctx.cache_dir) / "lottery"}
                extra = dict(common, seed=ctx.method_seed if ctx.method_seed is not None else ctx.seed)
            return bl.lottery_ticket(_initial_net(ctx), ctx.data, rate=options.get("rate") or 0.2,
                                     train_epochs=epochs, rewind_epoch=options["rewind_epoch"],
                                     scope=options["scope"], trained_state=net.state_dict(), **walk, **extra)
        if family == "gradual":
            epochs = options.get("epochs") or int(ctx.train["epochs"])
            return bl.gradual_magnitude(_initial_net(ctx), ctx.data, sparsity, epochs=epochs,
                                        begin_epoch=options["begin_epoch"], scope=options["scope"],
                                        budget_kind="train", **common)
        raise ValueError(f"unknown baseline family {family!r}")

    if structure == "weight":
        result = call(_weight_sparsity_for(net, point))
        out = result.net
        info: dict = {}
    else:
        dense_params = _total_params(net)
        result, _, info = _structured_search(dense_params, point, call,
                                             lambda r: _total_params(_shrink_net(r.net, r.masks)), iters=10)
        out = _shrink_net(result.net, result.masks)
    budget = result.budget
    info.update({"reached_sparsity": result.sparsity, "budget": budget.to_dict()})
    pruned = Pruned(net=out, info=info)
    pruned.retrain_epochs = int(budget.train_epochs)
    pruned.finetune_epochs = int(budget.finetune_epochs)
    return pruned


def trajectory_schedule(net: nn.Module, grid, point: float, rounds: int) -> list[float]:
    """The lottery sparsity schedule that walks the operating points as one trajectory.

    The first point of ``grid`` is reached in ``rounds`` rounds (the same fraction of the
    remaining weights each round), every later point one round after the one before, up to
    ``point``; the ticket of each point is the network retrained in its round, so the trials
    of all points share their rounds (Frankle & Carbin report every sparsity of one run).
    """
    from ..prune.baselines import geometric_schedule

    points = sorted({float(c) for c in grid if float(c) <= float(point) * (1 + 1e-9)} | {float(point)})
    sparsities: list[float] = []
    for c in points:
        s = _weight_sparsity_for(net, c)
        if not sparsities or s > sparsities[-1] + 1e-12:
            sparsities.append(s)
    return geometric_schedule(sparsities[0], rounds) + sparsities[1:]


def _initial_net(ctx: TrialContext) -> nn.Module:
    from ..nn.zoo import build_model

    net = build_model(ctx.train["model"], ctx.data.input_shape, ctx.data.num_classes,
                      **(ctx.train.get("model_options") or {}))
    if ctx.initial_state is not None:
        net.load_state_dict(ctx.initial_state)
    return net


# ================================================================== registry
def _scores() -> tuple:
    from ..diagnostics.scores import SCORES

    return tuple(sorted(SCORES))


_STRUCTURES = ("weight", "neuron", "kernel", "unit")
_SCOPES = ("global", "layer")

FAMILIES: dict[str, Family] = {
    "dense": Family("dense", "option", {"on": "bayesian"}, {"on": ("bayesian", "deterministic")}, _run_dense,
                    "the trained network, unpruned (reference at 1x)", grid=lambda o: False),
    "bayes": Family("bayes", "bayesian",
                    {"score": "snr", "structure": "weight", "scope": "global", "reduction": None,
                     "finetune_epochs": 0, "score_options": {}},
                    {"score": _scores(), "structure": _STRUCTURES, "scope": _SCOPES}, _run_bayes,
                    "Bayesian network pruned by a posterior score"),
    "self_compress": Family("self_compress", "bayesian",
                            {"score": "norm", "structure": "unit", "scope": "layer", "mode": "oneshot",
                             "finetune_epochs": 0, "tolerance": 0.5, "max_rounds": 10},
                            {"score": _scores(), "structure": ("neuron", "kernel", "unit"), "scope": _SCOPES,
                             "mode": ("oneshot", "iterative")}, _run_self_compress,
                            "self-compression: delete kernels/neurons by posterior-mean norm, shrink",
                            grid=lambda o: o.get("mode", "oneshot") == "oneshot"),
    "magnitude": Family("magnitude", "option",
                        {"on": "deterministic", "structure": "weight", "scope": "global", "score": "magnitude",
                         "finetune_epochs": 0},
                        {"on": ("deterministic", "bayesian"), "structure": _STRUCTURES, "scope": _SCOPES,
                         "score": ("magnitude", "l1", "l2", "norm")},
                        lambda c, o, p: _run_baseline(c, o, p, "magnitude"),
                        "one-shot magnitude pruning (|w|, or L1/L2 norm of units)"),
    "random": Family("random", "option",
                     {"on": "deterministic", "structure": "weight", "scope": "global", "finetune_epochs": 0},
                     {"on": ("deterministic", "bayesian"), "structure": _STRUCTURES, "scope": _SCOPES},
                     lambda c, o, p: _run_baseline(c, o, p, "random"), "seeded random pruning (the control)"),
    "imp": Family("imp", "deterministic",
                  {"structure": "weight", "scope": "global", "rounds": 3, "finetune_epochs": 1},
                  {"structure": _STRUCTURES, "scope": _SCOPES},
                  lambda c, o, p: _run_baseline(c, o, p, "imp"),
                  "iterative magnitude pruning with fine-tuning (Han et al. 2015)"),
    "lottery": Family("lottery", "deterministic",
                      {"rounds": 3, "rate": None, "rewind_epoch": 0, "epochs": None, "scope": "layer",
                       "schedule": "per_point"},
                      {"scope": _SCOPES, "schedule": ("per_point", "trajectory")},
                      lambda c, o, p: _run_baseline(c, o, p, "lottery"),
                      "lottery tickets: IMP with rewinding (Frankle & Carbin 2019)"),
    "gradual": Family("gradual", "deterministic",
                      {"epochs": None, "begin_epoch": 0, "scope": "global", "structure": "weight"},
                      {"scope": _SCOPES, "structure": _STRUCTURES},
                      lambda c, o, p: _run_baseline(c, o, p, "gradual"),
                      "gradual magnitude pruning during training (Zhu & Gupta 2017)"),
}


def run_method(family: str, ctx: TrialContext, options: dict, point: Optional[float]) -> Pruned:
    """Run one method family's adapter."""
    return FAMILIES[family].run(ctx, options, point)
