"""Magnitude-pruning baselines on the deterministic twin, under the same roof as the Bayesian criteria.

A comparative pruning study is only as honest as its baselines. This package gives the
standard ones, each reporting the epochs and seconds it used (training plus fine-tuning)
so that studies can compare at equal budget:

* one-shot magnitude pruning, unstructured (|w|), global or per layer, and structured
  L1 / L2-norm pruning of output neurons (Linear) and kernels (Conv2d), whose result the
  prune-core shrinker physically removes like the Bayesian path's (:mod:`.oneshot`);
* random pruning, unstructured and structured, seeded: the control (:mod:`.oneshot`);
* iterative magnitude pruning with fine-tuning (Han et al. 2015): a geometric schedule of
  per-round sparsities that reaches the target after the stated rounds (:mod:`.imp`);
* lottery-ticket iterative magnitude pruning with rewinding (Frankle & Carbin 2019), with an
  on-disk round cache shared along a trajectory (:mod:`.lottery`, :mod:`.round_cache`);
* gradual magnitude pruning during training (Zhu & Gupta 2017, cubic schedule), through
  ``fit_deterministic``'s ``step_hook`` (:mod:`.gradual`).

Rankings come from the one importance registry (:func:`pyrocompress.prune.importance.importances`);
selection goes through prune-core's :class:`~pyrocompress.prune.policy.PrunePolicy` and
:class:`~pyrocompress.prune.masks.Masks` (:mod:`.selection`); pruned weights are exactly zero
in the returned network, which :func:`~pyrocompress.prune.shrink.shrink` makes physically
smaller. :mod:`.budget` counts and spreads epochs; :mod:`.torch_prune` hands masks to
``torch.nn.utils.prune``. The command line and studies run these through the method registry
(:mod:`pyrocompress.prune.methods`; see docs/baselines.md).
"""
from ..importance import importances
from .budget import BUDGET_METHODS, Budget, allocate_budget
from .common import FIT_OPTIONS, output_layer, prunable_layers
from .gradual import gradual_magnitude
from .imp import iterative_magnitude
from .lottery import lottery_ticket
from .oneshot import default_scope, one_shot, random_prune
from .result import BaselineResult
from .schedules import check_schedule, cubic_sparsity, geometric_schedule, trajectory_schedule
from .selection import MaskKeeper, masks_from_zeros, select_masks, unit_sparsity
from .torch_prune import to_torch_prune

__all__ = [
    "FIT_OPTIONS", "BUDGET_METHODS", "Budget", "BaselineResult", "prunable_layers", "output_layer", "importances",
    "select_masks", "unit_sparsity", "masks_from_zeros", "MaskKeeper", "geometric_schedule",
    "cubic_sparsity", "check_schedule", "trajectory_schedule", "default_scope", "one_shot", "random_prune",
    "iterative_magnitude", "lottery_ticket", "gradual_magnitude", "allocate_budget", "to_torch_prune",
]
