"""Self-compression: the posterior names what is redundant, the network is cut and retrained.

Following "Self-Compression in Bayesian Neural Networks" (Carannante et al.), a trained
Bayesian network is ranked by a score of its posterior (default: the L2 (Frobenius) norm
of each kernel's / neuron's posterior mean, the ``magnitude`` score per unit, alias ``norm``;
under the automatic threshold, the prior's own deletion rule where it has one), the
redundant units are deleted physically
(:mod:`pyrocompress.prune.shrink`) and, optionally, the smaller network is trained on.

* **one-shot** (``iterative=False``): rank, delete (by ``sparsity``, ``threshold`` or the
  automatic per-layer threshold), optionally fine-tune with SVI for ``finetune_epochs``,
  evaluate.
* **iterative**: repeat rank / delete / train ``finetune_epochs`` (continuing from the
  surviving posterior, ``warm_start=True``, or retraining the smaller architecture from a
  fresh initialisation, ``warm_start=False``) until nothing more is redundant (the
  selection deletes nothing new), the validation accuracy falls more than ``tolerance``
  accuracy points below round 0's (that round is rejected and the previous network
  returned), or ``max_rounds`` is reached. Selection is ``threshold`` or ``auto``
  (``sparsity`` is a one-shot rule).

With ``structure="weight"`` single weights are masked (zero mean, zero variance; the masks
are kept through fine-tuning by a step hook) and units left without any weight are
deleted physically as well.

Every round adds a row to the history: round, action, accepted (within tolerance; a
one-shot result is returned either way), units per layer,
params / nonzero params of the deployable network, units removed, validation accuracy,
NLL and ECE (posterior predictive, seeded), seconds.

Public API: ``self_compress(model, guide, data, ...) -> SelfCompressionResult``
(``.model``, ``.guide``, ``.net``, ``.history``, ``.stop_reason``).
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import UserError
from ..data import DataBundle
from ..infer.fit import fit
from ..infer.guides import PosteriorGuide, is_posterior_guide, posterior_mean_network
from ..infer.predictive import evaluate, predictive_estimator
from ..metrics import parameter_counts
from ..names import Structure
from ..nn.arch import build, describe
from ..nn.model import BayesianModel
from .baselines.common import rounds_bar
from .masks import Masks
from .policy import PrunePolicy
from .shrink import shrink, unit_sizes
from .targets import Sparsity

__all__ = ["self_compress", "SelfCompressionResult"]


@dataclass
class SelfCompressionResult:
    """The compressed Bayesian model and guide, its posterior-mean network and the round history."""

    model: BayesianModel
    guide: PosteriorGuide
    net: nn.Module
    history: list[dict] = field(default_factory=list)
    stop_reason: str = ""
    masks: Optional[Masks] = None
    score: str = "magnitude"

    @property
    def rounds(self) -> int:
        return max((r["round"] for r in self.history), default=0)


def _evaluate(model: BayesianModel, guide, split, samples: int, seed: int, estimator: str) -> dict[str, float]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return evaluate(model, split, guide, num_samples=samples, estimator=predictive_estimator(estimator))


def _zero_masks(model: BayesianModel, guide) -> Masks:
    """Masks of the weights currently exactly zero in the guide (kept zero during fine-tuning)."""
    return Masks({n: guide.loc_of(f"{n}.weight").detach() != 0 for n, _ in model.bayes_layers()})


def _row(round_: int, action: str, accepted: bool, model, guide, metrics: dict, seconds: float,
         removed: int) -> dict[str, Any]:
    counts = parameter_counts(model, guide)
    row: dict[str, Any] = {"round": round_, "action": action, "accepted": accepted}
    for name, units in unit_sizes(model).items():
        row[f"units_{name}"] = units
    row.update({"params": counts["total"]["params"], "nonzero_params": counts["total"]["nonzero"],
                "removed_units": removed, "val_accuracy": metrics["accuracy"], "val_nll": metrics["nll"],
                "val_ece": metrics["ece"], "seconds": seconds})
    return row


def _fresh(model: BayesianModel, guide: PosteriorGuide, seed: int) -> tuple[BayesianModel, PosteriorGuide]:
    """The same (shrunk) architecture, freshly initialised, with the same priors and guide type."""
    torch.manual_seed(seed)
    arch = build(describe(model.architecture))
    layers = dict(model.bayes_layers())
    new = BayesianModel.from_module(arch, model.likelihood.num_classes, prior={n: l.prior for n, l in layers.items()},
                                    dataset_size=model.likelihood.dataset_size, include=list(layers))
    for name, layer in new.bayes_layers():
        layer.bias_prior = layers[name].bias_prior
    g = guide.like(new)
    return new.to(model.device), g.to(model.device)


def self_compress(model: BayesianModel, guide: PosteriorGuide, data: DataBundle, *, score: Optional[str] = None,
                  structure: Union[Structure, str] = Structure.KERNEL, iterative: bool = True,
                  sparsity: Optional[Union[float, Sparsity]] = None,
                  threshold: Optional[float] = None, auto: Optional[bool] = None, per_layer: bool = False,
                  ignored_layers: Sequence[str] = (), min_separation: float = 0.5, tolerance: float = 0.5,
                  max_rounds: int = 10, finetune_epochs: Optional[int] = None, warm_start: bool = True,
                  eval_samples: int = 16, seed: int = 0, fit_options: Optional[dict[str, Any]] = None,
                  score_options: Optional[dict[str, Any]] = None, progress: bool = False) -> SelfCompressionResult:
    """Compress a trained Bayesian model by deleting what its posterior marks redundant.

    ``score`` None ranks by ``norm`` (the L2 norm of each unit's posterior mean), or under the
    automatic threshold by the priors' own deletion rule where they have one (see
    :class:`~pyrocompress.prune.policy.PrunePolicy`).
    ``tolerance`` is in accuracy points (0.5 = half a percentage point) on the validation
    split (the test split, with a warning, when there is none). ``finetune_epochs``
    defaults to 5 when iterative, 0 when one-shot. ``fit_options`` go to :func:`fit`
    (``lr``, ``batch_size``, ``estimator``, ``kl_weight``, ``device``...). The inputs are
    not modified.
    """
    if not isinstance(model, BayesianModel):
        raise TypeError(f"self_compress needs a BayesianModel and its guide, got {type(model).__name__}")
    if not is_posterior_guide(guide):
        raise TypeError(f"self_compress needs a pyrocompress guide (a PosteriorGuide such as MeanFieldGuide), "
                        f"got {type(guide).__name__}")
    guide.check_belongs_to(model)
    if not isinstance(data, DataBundle):
        raise TypeError("data must be a DataBundle (see pyrocompress.load_dataset)")
    if auto is None:
        auto = sparsity is None and threshold is None
    if iterative and sparsity is not None:
        raise UserError("iterative self-compression selects by threshold= or auto=True; sparsity= is one-shot "
                         "(iterative=False)")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise UserError(f"tolerance must be a non-negative number of accuracy points, got {tolerance!r}")
    if not isinstance(max_rounds, int) or max_rounds < 1:
        raise UserError(f"max_rounds must be a positive integer, got {max_rounds!r}")
    if finetune_epochs is None:
        finetune_epochs = 5 if iterative else 0
    if not isinstance(finetune_epochs, int) or finetune_epochs < 0:
        raise UserError(f"finetune_epochs must be a non-negative integer, got {finetune_epochs!r}")
    if iterative and finetune_epochs == 0:
        warnings.warn("iterative self-compression without fine-tuning stops after one deletion", UserWarning,
                      stacklevel=2)
    policy = PrunePolicy(score=score, default_score="norm", structure=structure, sparsity=sparsity,
                         threshold=threshold, auto=auto,
                         per_layer=per_layer, ignored_layers=ignored_layers, min_separation=min_separation,
                         score_options=dict(score_options or {}))
    split = data.val
    if len(split) == 0:
        warnings.warn("no validation split: the tolerance is checked on the test split", UserWarning, stacklevel=2)
        split = data.test
    options = dict(fit_options or {})
    options.setdefault("progress", progress)
    for key in ("epochs", "seed", "step_hook"):
        options.pop(key, None)

    model, guide = copy.deepcopy(model), copy.deepcopy(guide)
    start = time.perf_counter()
    estimator = options.get("estimator", "local_reparam")
    base = _evaluate(model, guide, split, eval_samples, seed, estimator)
    history = [_row(0, "initial", True, model, guide, base, time.perf_counter() - start, 0)]
    floor = base["accuracy"] - tolerance / 100.0
    best = (model, guide)
    stop = "max_rounds"
    last_masks: Optional[Masks] = None
    total = max_rounds if iterative else 1
    for rnd in rounds_bar(range(1, total + 1), total, "self-compression rounds", options):
        t0 = time.perf_counter()
        cur_model, cur_guide = best
        masks = policy.masks(cur_model, cur_guide)
        before_zero = _zero_masks(cur_model, cur_guide)
        combined = masks & before_zero
        newly = sum(int((before_zero.weight[n] & ~combined.weight[n]).sum()) for n in combined.weight
                    if n in before_zero.weight)
        if newly == 0:
            stop = "nothing redundant"
            break
        shrunk = shrink(cur_model, cur_guide, masks=combined)
        new_model, new_guide = shrunk.model, shrunk.guide
        removed = shrunk.plan.removed
        action = "deleted"
        if finetune_epochs > 0:
            if not warm_start:
                zeros = _zero_masks(new_model, new_guide) if policy.structure == "weight" else None
                new_model, new_guide = _fresh(new_model, new_guide, seed + rnd)
                if zeros is not None:
                    zeros.apply(new_model, new_guide)
                action = "deleted+retrained"
            else:
                action = "deleted+finetuned"
            hook = _zero_masks(new_model, new_guide).step_hook() if policy.structure == "weight" else None
            fit(new_model, new_guide, data, epochs=finetune_epochs, seed=seed + rnd, step_hook=hook, **options)
        metrics = _evaluate(new_model, new_guide, split, eval_samples, seed, estimator)
        within = metrics["accuracy"] >= floor - 1e-12
        accepted = within or not iterative  # one-shot returns its result; the row says whether it is within
        history.append(_row(rnd, action, within, new_model, new_guide, metrics, time.perf_counter() - t0,
                            removed))
        if not accepted:
            stop = f"validation accuracy {metrics['accuracy']:.4f} fell more than {tolerance} points below " \
                   f"round 0 ({base['accuracy']:.4f}); round {rnd} rejected"
            break
        best = (new_model, new_guide)
        last_masks = _zero_masks(new_model, new_guide) if policy.structure == "weight" else None
        if not iterative:
            stop = "one-shot" + ("" if within else f" (validation accuracy more than {tolerance} points below "
                                                   "round 0)")
    model, guide = best
    return SelfCompressionResult(model=model, guide=guide, net=posterior_mean_network(model, guide),
                                 history=history, stop_reason=stop, masks=last_masks,
                                 score=policy.resolved_score(model))
