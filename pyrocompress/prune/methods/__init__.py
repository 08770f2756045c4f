"""The pruning methods: one class per family, built from one validated set of options, run through one registry.

* :mod:`.base`: :class:`Method` (what a family declares: options, targets, the network it
  starts from and its training recipe, :meth:`Method.run`), :class:`Pruned` (the result),
  :class:`Recipe`;
* :mod:`.options`: parsing raw options into typed dataclasses (the edge);
* :mod:`.context`: :class:`Context` (what a front door hands a method), :class:`FitOptions`
  (the one translation of a run's training options), :class:`Progress`;
* :mod:`.registry`: :data:`METHODS`, :func:`build_method`, :func:`check_method_fits`;
* the families: ``dense`` (:mod:`.dense`), ``bayes`` (:mod:`.bayes`), ``self_compress``
  (:mod:`.selfcompress`), ``magnitude`` and ``random`` (:mod:`.magnitude`), ``imp``
  (:mod:`.imp`), ``lottery`` (:mod:`.lottery`), ``gradual`` (:mod:`.gradual`), ``sparse_vd`` and
  ``bayesian_compression`` (:mod:`.sparse`: the sparsity priors' routes, with their training recipes).
"""
from .base import TRAIN_KEYS, Method, Pruned, Recipe, check_train_overrides
from .context import NO_PROGRESS, Context, FitOptions, Progress, initial_network
from .options import OptionError, option_names, options_dict, parse_options
from .registry import (METHODS, UnknownMethodError, build_method, check_method_fits, method_class, method_for_run,
                       method_names)

__all__ = [
    "Method", "Pruned", "Recipe", "TRAIN_KEYS", "check_train_overrides", "Context", "FitOptions", "Progress",
    "NO_PROGRESS", "initial_network", "OptionError", "option_names", "options_dict", "parse_options", "METHODS",
    "UnknownMethodError", "build_method", "check_method_fits", "method_class", "method_for_run", "method_names",
]
