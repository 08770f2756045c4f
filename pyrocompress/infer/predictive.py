"""The posterior predictive at the speed of forward passes.

``predictive_probs`` averages the class probabilities of ``S`` posterior samples. Its cost is
``S`` forward passes of the network over the inputs, each at the deterministic network's
speed, in batches sized from a memory budget (never ``S`` x batch rows at once):

* ``weight_sampling`` (and Pyro autoguides): ``S`` weight sets, each drawn once
  (:class:`~pyrocompress.infer.estimators.FrozenDraw`, or one guide trace) and run over every
  batch of the inputs: exactly the cost of ``S`` deterministic forwards plus ``S`` weight draws;
* ``local_reparam`` / ``flipout``: per-example noise; each batch is passed ``S`` times with
  fresh noise, the same distribution as the ``S``-fold repeated inputs it replaces, without
  their memory. Local reparameterization reuses the first Bayesian layer's pre-activation
  mean and standard deviation across the ``S`` passes of a batch (its input, the data, does
  not change), so only its noise is drawn again;
* ``moment_propagation[:...]``: one propagation of the moments per batch, then ``S`` draws of
  the Gaussian logits (the predictive it was trained with);
* ``mode="mean"``: one pass of the posterior-mean network.

Probabilities are summed as they come, so memory holds one batch's activations and the
``(N, C)`` running sum; the ``(S, N, C)`` tensor exists only with ``return_samples=True``.
Seeding torch (``pyro.set_rng_seed``) makes a predictive reproducible.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from pyro import poutine

from ..errors import UserError
from .._scope import pyro_scope
from ..metrics import classification_metrics
from ..nn.layers import BayesLayer
from ..nn.model import BayesianModel
from .estimators import _TINY, FrozenDraw, LocalReparameterization, PosteriorMean, make_estimator
from .guides import is_posterior_guide
from .moments import is_moment_estimator, moment_options, sample_logits

__all__ = [
    "predictive_probs",
    "network_probs",
    "evaluate",
    "EVAL_ESTIMATORS",
    "resolve_eval_estimator",
    "predictive_estimator",
    "predictive_batch_size",
    "DEFAULT_MEMORY_BUDGET",
]

#: bytes of activations one forward of the predictive may hold at once (the batch size is
#: chosen from it and the layer sizes); 32 MiB keeps every activation tensor below glibc's
#: largest mmap threshold, so batches reuse heap memory instead of mapping and faulting in
#: fresh pages (the kernel time that dominated the old predictive), at full throughput
DEFAULT_MEMORY_BUDGET = 32 * 2 ** 20

#: estimators of the posterior predictive a study or the prune CLI may be asked for
EVAL_ESTIMATORS = ("auto", "local_reparam", "weight_sampling", "flipout")

# working memory of one layer per element of its input and output, relative to a plain
# forward: local reparameterization and flipout hold mean, variance (or perturbation) and noise
_WORKSPACE = {"plain": 1.0, "noise": 3.0, "moments": 4.0}


def predictive_estimator(training_estimator: str) -> str:
    """The estimator of the posterior predictive of a guide trained with ``training_estimator``.

    Moment propagation predicts with its own propagated moments (one pass, the rules it was
    trained with, as the eVI papers do); every sampling estimator with weight sampling: each
    of the S samples is one weight set of q(w), so the predictive is exactly E_q[p(y | x, w)]
    for every layer type, at the cost of S deterministic forward passes. (Local
    reparameterization gives the same per-example distribution for Linear layers only: in a
    convolution it draws every output position independently, although the positions share
    their kernel; and it costs two convolutions and a noise draw per activation.)
    """
    return str(training_estimator) if is_moment_estimator(training_estimator) else "weight_sampling"


def resolve_eval_estimator(name: Optional[str], training_estimator: Optional[str]) -> str:
    """The predictive estimator to use: ``name``, or with ``auto`` (or None) the one a guide
    trained with ``training_estimator`` predicts with (:func:`predictive_estimator`)."""
    if not name or name == "auto":
        return predictive_estimator(training_estimator or "weight_sampling")
    return str(name)


# ----------------------------------------------------------------------- batching
def _check_count(name: str, value, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def _unfolded_elements(module: nn.Module, output) -> int:
    """Elements of a convolution's unfolded input (im2col: in_channels / groups x kernel area x
    output positions) for one example, the workspace a CPU convolution may allocate; 0 otherwise."""
    kernel = getattr(module, "kernel_size", None)
    if not isinstance(output, torch.Tensor) or output.dim() != 4 or not isinstance(kernel, tuple):
        return 0
    channels = int(getattr(module, "in_channels", 0)) // int(getattr(module, "groups", 1) or 1)
    return channels * math.prod(kernel) * output.shape[-2] * output.shape[-1]


def _leaf_sizes(net: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x1: torch.Tensor) -> list[int]:
    """Elements of (input + output) of every leaf layer for one example, and of a convolution's
    unfolded input (:func:`_unfolded_elements`): one probe forward."""
    sizes: list[int] = []

    def hook(module, inputs, output):
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        sizes.append((first.numel() if first is not None else 0)
                     + (output.numel() if isinstance(output, torch.Tensor) else 0))
        unfolded = _unfolded_elements(module, output)
        if unfolded:
            sizes.append(unfolded)

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, BayesLayer) or not any(True for _ in m.children())]
    try:
        forward(x1)
    finally:
        for h in handles:
            h.remove()
    return sizes or [x1.numel()]


def predictive_batch_size(per_example_elements: int, itemsize: int, num_examples: int,
                          memory_budget: Optional[int] = None, workspace: float = 1.0,
                          fixed_elements: int = 0, cap: Optional[int] = None) -> int:
    """Examples per forward so that ``batch x per_example_elements x workspace x itemsize`` bytes
    (plus ``fixed_elements`` per example kept across passes) fit ``memory_budget``.

    At least one example (a single example larger than the budget still runs), at most
    ``num_examples`` and ``cap``.
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else _check_count("memory_budget", memory_budget)
    per_example = max(1.0, (per_example_elements * workspace + fixed_elements) * itemsize)
    batch = max(1, int(budget // per_example))
    batch = min(batch, max(1, int(num_examples)))
    return min(batch, cap) if cap is not None else batch


# ----------------------------------------------------------------------- samplers
class _Accumulator:
    """Running sum of the S samples' probabilities; the (S, N, C) tensor only when asked."""

    def __init__(self, num_samples: int, keep: bool) -> None:
        self.num_samples, self.keep = num_samples, keep
        self.total: Optional[torch.Tensor] = None
        self.samples: Optional[torch.Tensor] = None

    def add(self, s: int, start: int, probs: torch.Tensor, num_examples: int) -> None:
        """Add sample ``s``'s probabilities of the examples ``start:start + len(probs)``."""
        if self.total is None:
            self.total = probs.new_zeros((num_examples, probs.shape[-1]))
            if self.keep:
                self.samples = probs.new_empty((self.num_samples, num_examples, probs.shape[-1]))
        self.total[start:start + probs.shape[0]] += probs
        if self.samples is not None:
            self.samples[s, start:start + probs.shape[0]] = probs

    def result(self) -> torch.Tensor:
        assert self.total is not None
        return self.samples if self.keep else self.total / self.num_samples


def _frozen_passes(x: torch.Tensor, num_samples: int, batch: int, acc: _Accumulator,
                   draw: Callable[[], Callable[[torch.Tensor], torch.Tensor]]) -> None:
    """``draw()`` fixes one posterior sample and returns its forward; run it over every batch."""
    n = x.shape[0]
    for s in range(num_samples):
        forward = draw()
        for start in range(0, n, batch):
            acc.add(s, start, F.softmax(forward(x[start:start + batch]), -1), n)


def _noise_passes(x: torch.Tensor, num_samples: int, batch: int, acc: _Accumulator,
                  forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Per-example noise: ``S`` passes over each batch, fresh noise in every pass."""
    n = x.shape[0]
    for start in range(0, n, batch):
        xb = x[start:start + batch]
        for s in range(num_samples):
            acc.add(s, start, F.softmax(forward(xb), -1), n)


class _CachedInputLRT(LocalReparameterization):
    """Local reparameterization that keeps a layer's pre-activation mean and standard deviation
    while its input is the same data: the first Bayesian layer sees the same batch in all S
    passes, so its two convolutions / matmuls run once per batch, not once per sample.

    The input is recognised by its memory (pointer, shape, strides) and version counter, not by
    object identity, so a fresh view of the same batch (``nn.Flatten``) hits; the kept input
    reference keeps that memory from being reused for other data meanwhile.
    """

    def __init__(self, guide, layer: BayesLayer) -> None:
        super().__init__(guide)
        self.layer = layer
        self._kept: Optional[tuple[tuple, torch.Tensor, torch.Tensor, torch.Tensor]] = None

    @staticmethod
    def _key(x: torch.Tensor) -> tuple:
        return x.data_ptr(), tuple(x.shape), x.stride(), x._version, x.dtype, x.device

    def compute(self, layer, x):
        if layer is not self.layer:
            return super().compute(layer, x)
        key = self._key(x)
        kept = self._kept
        if kept is None or kept[0] != key:
            self._kept = kept = None  # free the last batch's moments before computing the next
            lw, sw, lb, sb = self._params(layer)
            mean = layer.op(x, lw, lb)
            var_w = sw * sw
            var = layer.op(x * x, var_w.expand_as(lw) if var_w.shape != lw.shape else var_w,
                           None if sb is None else sb * sb)
            if sb is None:
                var = var + _TINY
            kept = self._kept = (key, x, mean, var.sqrt_())
        _, _, mean, std = kept
        return self._per_example_units(layer, torch.addcmul(mean, std, torch.randn_like(mean)))


def _first_bayes_layer(model: BayesianModel) -> Optional[BayesLayer]:
    """The first Bayesian layer in definition order (in a Sequential, the first one the data meets)."""
    return next((m for m in model.net.modules() if isinstance(m, BayesLayer)), None)


def _predict(model: BayesianModel, guide, x: torch.Tensor, num_samples: int, mode: str, estimator: str,
             batch_size: Optional[int], memory_budget: Optional[int], keep: bool) -> torch.Tensor:
    posterior_guide = is_posterior_guide(guide)
    if mode == "mean" and not posterior_guide:
        raise UserError("mode='mean' needs a pyrocompress MeanFieldGuide")
    n, x1 = x.shape[0], x[:1]

    def autoguide_draw() -> Callable[[torch.Tensor], torch.Tensor]:
        return poutine.replay(model.net, trace=poutine.trace(guide).get_trace(x1))

    # one example's activation sizes, from a forward that draws no random numbers (a seeded
    # predictive then makes the same draws however its batches are sized): the posterior mean,
    # or an autoguide's first draw, which becomes the first sample
    first_draw = None if posterior_guide else autoguide_draw()
    mean_handler = PosteriorMean(guide) if posterior_guide else None

    def probe(xb: torch.Tensor) -> torch.Tensor:
        if first_draw is not None:
            return first_draw(xb)
        with mean_handler:
            return model.net(xb)
    first = _first_bayes_layer(model)
    first_out: list[int] = []
    hook = first.register_forward_hook(lambda m, i, o: first_out.append(o[0].numel())) if first is not None else None
    try:
        sizes = _leaf_sizes(model.net, probe, x1)
    finally:
        if hook is not None:
            hook.remove()

    def batch_for(workspace: float, fixed: int = 0) -> int:
        return predictive_batch_size(max(sizes), x.element_size(), n, memory_budget, workspace, fixed, batch_size)

    handler = None if mode == "mean" or not posterior_guide or is_moment_estimator(estimator) \
        else make_estimator(estimator, guide)
    # the posterior scales, computed once for all S samples rather than once per layer and sample
    # (many small ops: on a busy machine each costs a thread wake-up, a fifth of an MLP's pass)
    scales = guide.scales() if handler else None
    if handler is not None:
        handler.scales = scales
    if mode == "mean" or isinstance(handler, PosteriorMean):  # one network: one pass
        acc = _Accumulator(1, keep)
        _frozen_passes(x, 1, batch_for(_WORKSPACE["plain"]), acc, lambda: probe)
        probs = acc.result()
        if mode == "mean" or not keep:
            return probs
        return probs.expand(num_samples, *probs.shape[1:]).clone()  # S copies of the same network's
    acc = _Accumulator(num_samples, keep)
    if not posterior_guide:  # Pyro autoguides: one guide trace per sample, replayed over every batch
        pending = [first_draw]
        _frozen_passes(x, num_samples, batch_for(_WORKSPACE["plain"]), acc,
                       lambda: pending.pop() if pending else autoguide_draw())
        return acc.result()
    if handler is None:  # moment propagation: one propagation per batch, S draws of the Gaussian logits
        opts = moment_options(estimator)
        rules = {k: opts[k] for k in ("relu", "pool") if k in opts}  # the rest: sample_logits' defaults
        batch = batch_for(_WORKSPACE["moments"])
        for start in range(0, n, batch):
            probs = F.softmax(sample_logits(model, guide, x[start:start + batch], num_samples, **rules), -1)
            for s in range(num_samples):
                acc.add(s, start, probs[s], n)
        return acc.result()
    if not handler.per_example_noise:  # weight sampling: S weight sets, each frozen over every batch
        frozen = FrozenDraw(guide)
        frozen.scales = scales

        def frozen_forward(xb: torch.Tensor) -> torch.Tensor:
            with frozen:
                return model.net(xb)

        def draw() -> Callable[[torch.Tensor], torch.Tensor]:
            frozen.redraw()
            return frozen_forward
        _frozen_passes(x, num_samples, batch_for(_WORKSPACE["plain"]), acc, draw)
        return acc.result()
    fixed = 0
    if isinstance(handler, LocalReparameterization) and first is not None:
        handler = _CachedInputLRT(guide, first)
        handler.scales = scales
        fixed = 2 * first_out[0]  # the first layer's kept mean and standard deviation

    def noisy_forward(xb: torch.Tensor) -> torch.Tensor:
        with handler:
            return model.net(xb)
    _noise_passes(x, num_samples, batch_for(_WORKSPACE["noise"], fixed), acc, noisy_forward)
    return acc.result()


# ----------------------------------------------------------------------- public API
@torch.no_grad()
def network_probs(net: nn.Module, x: torch.Tensor, batch_size: Optional[int] = None,
                  memory_budget: Optional[int] = None) -> torch.Tensor:
    """Class probabilities of a deterministic network, in batches sized from ``memory_budget``
    (bytes of activations per forward; :data:`DEFAULT_MEMORY_BUDGET`) or of ``batch_size``."""
    _check_count("batch_size", batch_size, allow_none=True)
    was_training = net.training
    net.eval()
    try:
        if x.shape[0] == 0:
            return F.softmax(net(x), dim=-1)
        if batch_size is None:
            sizes = _leaf_sizes(net, net, x[:1])
            batch_size = predictive_batch_size(max(sizes), x.element_size(), x.shape[0], memory_budget)
        out = [F.softmax(net(x[i:i + batch_size]), dim=-1) for i in range(0, x.shape[0], batch_size)]
    finally:
        net.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def predictive_probs(model: BayesianModel, guide, x: torch.Tensor, num_samples: int = 16,
                     mode: str = "predictive", estimator: str = "local_reparam", batch_size: Optional[int] = None,
                     return_samples: bool = False, memory_budget: Optional[int] = None) -> torch.Tensor:
    """Posterior-predictive class probabilities, averaged over ``num_samples`` draws.

    The cost is ``num_samples`` forward passes (see the module doc for how each estimator
    draws); ``mode="mean"`` is one pass of the posterior-mean network. ``return_samples``
    returns the (S, N, C) probabilities instead of their mean ((1, N, C) for ``mode="mean"``).
    ``memory_budget`` (bytes, default :data:`DEFAULT_MEMORY_BUDGET`) bounds the activations of
    one forward and so the examples per batch; ``batch_size`` caps them further.
    """
    _check_count("num_samples", num_samples)
    _check_count("batch_size", batch_size, allow_none=True)
    if memory_budget is not None:
        _check_count("memory_budget", memory_budget)
    if mode not in ("predictive", "mean"):
        raise UserError(f"mode must be 'predictive' or 'mean', got {mode!r}")
    if x.shape[0] == 0:
        raise UserError("predictive_probs needs at least one input")
    with pyro_scope():
        return _predict(model, guide, x, int(num_samples), mode, estimator, batch_size, memory_budget,
                        bool(return_samples))


def evaluate(model, split, guide=None, num_samples: int = 16, mode: str = "predictive",
             batch_size: Optional[int] = None, estimator: str = "local_reparam",
             memory_budget: Optional[int] = None) -> dict[str, float]:
    """Metrics of a Bayesian model (with its guide) or of a plain ``nn.Module`` on a split.

    ``estimator`` draws the Bayesian predictive (see :func:`predictive_probs`);
    ``memory_budget`` and ``batch_size`` bound the examples per forward.
    """
    x, y = split.x, split.y
    if isinstance(model, BayesianModel):
        if guide is None:
            raise UserError("evaluating a BayesianModel needs its guide")
        device = model.device
        probs = predictive_probs(model, guide, x.to(device), num_samples, mode, estimator=estimator,
                                 batch_size=batch_size, memory_budget=memory_budget)
    else:
        device = next(model.parameters()).device
        probs = network_probs(model, x.to(device), batch_size, memory_budget)
    return classification_metrics(probs, y.to(device))
