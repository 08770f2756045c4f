"""The sparsity-prior routes: ``sparse_vd`` and ``bayesian_compression``.

Both prune a Bayesian network whose *prior* was chosen to find the redundancy, and both come
with that network's training recipe (:meth:`Method.recipe`), so a study trains it for them:

* ``sparse_vd``: sparse variational dropout (Molchanov et al. 2017). The network is trained
  with the log-uniform prior (``prior = "log_uniform"``, the paper's KL approximation) and the
  weights whose dropout rate passes the prior's rule (log alpha > 3) are deleted; no fine-tuning
  after deletion. At a study's operating points the weights are ranked by log alpha instead.
* ``bayesian_compression``: Bayesian Compression (Louizos, Ullrich & Welling 2017). Every
  hidden unit has a scale with a group horseshoe prior (``group_horseshoe``; or the
  normal-Jeffreys ``group_log_uniform`` with ``[methods.train] prior = {default =
  "group_log_uniform", output = "log_uniform"}``) and the output layer's weights the log-uniform
  prior (its units are the classes). The units the posterior switched off are deleted
  physically (the automatic threshold is the group prior's own rule: a unit's posterior-mean
  norm below 5% of its layer's largest for the horseshoe, unit log alpha > 3 for
  ``group_log_uniform``), then the weights of log-uniform layers by their rule; the composed
  masks are shrunk.

Both refuse a run trained with other priors, naming the fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from ...errors import UserError
from ...infer.fit import fit
from ...names import Kind, Scope, Structure
from ...nn.priors import GroupScalePrior, LogUniformPrior
from ..masks import Masks, layer_shapes
from ..policy import PrunePolicy
from ..shrink import shrink
from ..targets import AutoThreshold, Compression, Sparsity, Target, Threshold
from .base import Method, Pruned, Recipe
from .bayes import prune_posterior
from .context import Context
from .options import count, number, score_field

__all__ = ["SparseVD", "SparseVDOptions", "BayesianCompression", "BayesianCompressionOptions",
           "SPARSE_VD_RECIPE", "BAYESIAN_COMPRESSION_RECIPE"]

#: the training recipe of ``sparse_vd`` (a study trains its network with these, over the study's own
#: training options; ``[methods.train]`` overrides them): the log-uniform prior, the paper's start
#: (sigma^2 = e^-10), a linear KL warm-up, a learning rate decayed linearly to zero, and the scales at the
#: weights' learning rate (Molchanov's code; faster scales keep more weights: docs/results.md)
SPARSE_VD_RECIPE: dict[str, Any] = {"prior": "log_uniform", "init_scale": 0.0067, "kl_anneal_epochs": 5,
                                    "lr_schedule": "linear", "scale_lr_factor": 1.0}
#: the training recipe of ``bayesian_compression``: group horseshoe units, a log-uniform output layer
BAYESIAN_COMPRESSION_RECIPE: dict[str, Any] = {"prior": {"default": "group_horseshoe", "output": "log_uniform"},
                                               "kl_anneal_epochs": 5, "lr_schedule": "linear"}


class _PriorRuleMethod(Method):
    """What the two sparsity-prior routes share: a training recipe of their own, the prior's
    automatic rule as the default target (a study's grid only without it), and the refusal of a
    network trained without the prior they read."""

    targets = (Sparsity, Compression, Threshold, AutoThreshold, None)
    starts = (Kind.BAYESIAN,)
    #: the training options the method's network gets (over the study's; ``[methods.train]`` wins)
    RECIPE: ClassVar[dict[str, Any]] = {}
    #: the prior at least one Bayesian layer must have, and how to train such a network
    NEEDS: ClassVar[type] = object
    NEEDS_WHAT: ClassVar[str] = ""
    TRAIN_HINT: ClassVar[str] = ""

    def recipe(self) -> Recipe:
        return Recipe(self.start(), {**self.RECIPE, **self.train})

    def uses_grid(self) -> bool:
        return not self.options.auto_threshold

    def default_target(self) -> Optional[Target]:
        return AutoThreshold(self.options.min_separation) if self.options.auto_threshold else None

    def _check_prior(self, ctx: Context) -> None:
        priors = {name: layer.prior for name, layer in ctx.run.model.bayes_layers()}
        if not any(isinstance(p, self.NEEDS) for p in priors.values()):
            raise UserError(f"{self.name} prunes a network trained with {self.NEEDS_WHAT}; {ctx.run.path} has "
                            f"{ {n: p.name for n, p in priors.items()} }: {self.TRAIN_HINT}")


@dataclass(frozen=True)
class SparseVDOptions:
    """Options of ``sparse_vd``."""

    score: Optional[str] = score_field("log_alpha", "the ranking at a study's operating points (default log_alpha)")
    auto_threshold: bool = True
    scope: Scope = Scope.GLOBAL
    finetune_epochs: int = count(0)
    ignored_layers: tuple[str, ...] = ()
    min_separation: float = number(0.5, open_low=True)

    KEY_ALIASES: ClassVar[dict[str, str]] = {"ignore": "ignored_layers"}


class SparseVD(_PriorRuleMethod):
    """Sparse variational dropout: a log-uniform prior, weights with log alpha > 3 deleted."""

    name = "sparse_vd"
    description = "sparse variational dropout (Molchanov 2017): log-uniform prior, log alpha > 3 deleted"
    Options = SparseVDOptions
    RECIPE = SPARSE_VD_RECIPE
    NEEDS = LogUniformPrior
    NEEDS_WHAT = "the log-uniform prior"
    TRAIN_HINT = "train it with `pyrocompress train --prior log_uniform` (or use --method bayes for other posteriors)"

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        self._check_prior(ctx)
        o = self.options
        target = target if target is not None else AutoThreshold(o.min_separation)
        result = prune_posterior(ctx, target, score=o.score, structure=Structure.WEIGHT, scope=o.scope,
                                 finetune_epochs=o.finetune_epochs, ignored_layers=o.ignored_layers)
        result.info["method"] = self.name
        return result


@dataclass(frozen=True)
class BayesianCompressionOptions:
    """Options of ``bayesian_compression``."""

    score: Optional[str] = score_field(None, "unit ranking (default: the group prior's rule, else the posterior-mean "
                                             "norm of the unit)")
    auto_threshold: bool = True
    scope: Scope = Scope.LAYER
    prune_weights: bool = True
    finetune_epochs: int = count(0)
    ignored_layers: tuple[str, ...] = ()
    min_separation: float = number(0.5, open_low=True)

    KEY_ALIASES: ClassVar[dict[str, str]] = {"ignore": "ignored_layers"}


class BayesianCompression(_PriorRuleMethod):
    """Bayesian Compression: group-prior units switched off by the posterior, deleted physically."""

    name = "bayesian_compression"
    description = ("Bayesian Compression (Louizos 2017): group horseshoe units, the ones the posterior switches off "
                   "deleted physically")
    Options = BayesianCompressionOptions
    RECIPE = BAYESIAN_COMPRESSION_RECIPE
    NEEDS = GroupScalePrior
    NEEDS_WHAT = "a group prior"
    TRAIN_HINT = ("train it with e.g. `pyrocompress train --prior '{\"default\": \"group_horseshoe\", "
                  "\"output\": \"log_uniform\"}'`")

    def run(self, ctx: Context, target: Optional[Target]) -> Pruned:
        self._check_prior(ctx)
        o = self.options
        target = target if target is not None else AutoThreshold(o.min_separation)
        units = prune_posterior(ctx, target, score=o.score, structure=Structure.UNIT, scope=o.scope,
                                ignored_layers=o.ignored_layers)
        model, guide = units.model, units.guide
        info = dict(units.info, method=self.name)
        if o.prune_weights and isinstance(target, AutoThreshold):
            weight_masks = self._weight_rule_masks(model, guide, o.ignored_layers, o.min_separation)
            if weight_masks is not None:
                small = shrink(model, guide, masks=weight_masks, warn=False)
                model, guide = small.model, small.guide
                info["weight_mask_sparsity"] = weight_masks.sparsity()
        ctx.progress.stage("pruned", model=model, guide=guide)
        pruned = Pruned(model=model, guide=guide, info=info)
        if o.finetune_epochs:
            hook = Masks({n: guide.loc_of(f"{n}.weight").detach() != 0 for n, _ in model.bayes_layers()}).step_hook()
            fit(model, guide, ctx.data, epochs=o.finetune_epochs, step_hook=hook, **ctx.fit.svi(ctx.seed))
            pruned.finetune_epochs = o.finetune_epochs
            ctx.progress.stage("finetuned", model=model, guide=guide)
        return pruned

    @staticmethod
    def _weight_rule_masks(model, guide, ignored: tuple[str, ...], min_separation: float) -> Optional[Masks]:
        """Masks deleting the weights of the layers whose prior has a per-weight rule (log alpha), or None."""
        per_weight = [n for n, layer in model.bayes_layers()
                      if isinstance(layer.prior, LogUniformPrior) and n not in ignored]
        if not per_weight:
            return None
        others = tuple(n for n in layer_shapes(model) if n not in per_weight)
        policy = PrunePolicy(score="log_alpha", structure=Structure.WEIGHT, auto=True,
                             min_separation=min_separation, ignored_layers=ignored + others)
        return policy.masks(model, guide)
