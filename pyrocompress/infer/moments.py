"""Sampling-free moment propagation (the eVI estimator of the self-compression paper).

Instead of sampling weights or pre-activations, every activation is summarised by a
per-unit Gaussian ``N(mean, var)`` that is pushed through the network layer by layer
(Dera et al. 2019, "extended variational inference"; Carannante et al. 2020):

* Bayesian Linear / Conv2d with independent Gaussian weights ``N(W_mu, W_var)`` and
  inputs with their own mean and variance::

      E[y]   = mu_x W_mu^T + b_mu
      Var[y] = var_x (W_mu^2 + W_var)^T + mu_x^2 W_var^T + b_var
             = var_x (W_mu^2)^T + (mu_x^2 + var_x) W_var^T + b_var

  (the convolution analogue with ``F.conv2d``). With the kernel-shared scale of the eVI
  papers (``MeanFieldGuide(shared_scale="group")``: one variance per kernel / output unit)
  the ``W_var`` term is one all-ones convolution scaled per output channel.
* deterministic Linear / Conv2d: ``E = op(mu, W)``, ``Var = op(var, W^2)``.
* ReLU: ``relu="exact"`` (default) uses the exact mean and variance of the rectified
  Gaussian; ``relu="taylor"`` the first-order Taylor approximation of the eVI papers
  (``mean = relu(mu)``, ``var = var * 1[mu > 0]``), which is what the paper used.
* k x k max-pooling (stride k): ``pool="clark"`` (default) applies Clark's (1961) moments
  of the max of two independent Gaussians pairwise over each window; ``pool="argmax"``
  takes the window element of largest mean and keeps its variance (the first-order Taylor
  rule, the eVI-style choice).
* Flatten, Dropout (identity: moments of the evaluation-mode network), Identity pass through.

Units are treated as independent after every layer (a diagonal covariance): exact for a
single layer, an approximation through a chain (activations that share a kernel are
correlated). The classification likelihood is computed from the Gaussian logits, see
:class:`MomentPropagationELBO`. See ``docs/moment_propagation.md``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PyrocompressError, UserError
from ..nn.layers import BayesConv2d, BayesLayer, BayesLinear
from ..nn.model import BayesianModel
from .elbo import MeanFieldELBO

__all__ = [
    "MomentPropagationELBO",
    "moment_options",
    "is_moment_estimator",
    "propagate_moments",
    "bayes_layer_moments",
    "linear_moments",
    "relu_moments",
    "maxpool_moments",
    "gaussian_max_moments",
    "logit_nll",
    "sample_logits",
    "probit_probs",
    "UnsupportedLayerError",
    "RELU_MODES",
    "POOL_MODES",
    "LIKELIHOODS",
]

RELU_MODES = ("exact", "taylor")
POOL_MODES = ("clark", "argmax")
LIKELIHOODS = ("sampled", "probit", "gaussian")

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_A_CLAMP = 10.0  # the normalised variance factors are 1 / 0 to float precision beyond |a| = 10
_TINY_VAR = 1e-24

Moments = tuple[torch.Tensor, Optional[torch.Tensor]]


class UnsupportedLayerError(PyrocompressError, TypeError):
    """Moment propagation met a layer whose moments it cannot compute."""


SUPPORTED = "BayesLinear, BayesConv2d, Linear, Conv2d, ReLU, MaxPool2d (kernel == stride), Flatten, Dropout, Identity"


def _check_mode(value: str, valid: tuple[str, ...], what: str) -> str:
    key = str(value).lower()
    if key not in valid:
        raise UserError(f"unknown {what} {value!r}; valid: {list(valid)}")
    return key


# --------------------------------------------------------------------- primitives
def _pdf(a: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * a * a) / _SQRT_2PI


def _cdf(a: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(a)


def _rectified(m: torch.Tensor, v: torch.Tensor):
    """Shared pieces of the rectified Gaussian relu(z), z ~ N(m, v): s, Phi(a), phi(a), E, Var.

    ``a = m / s`` is clamped to [-10, 10], beyond which Phi and phi are 0 / 1 to float precision.
    """
    s = torch.sqrt(v + _TINY_VAR)
    a = (m / s).clamp_(-_A_CLAMP, _A_CLAMP)
    cdf = _cdf(a)
    pdf = _pdf(a)
    mean = (m * cdf + s * pdf).clamp_min_(0.0)
    cdf_neg = 1.0 - cdf
    factor = (cdf + a * a * cdf * cdf_neg + a * pdf * (cdf_neg - cdf) - pdf * pdf).clamp_min_(0.0)
    return s, a, cdf, pdf, mean, v * factor


class _ReLUMoments(torch.autograd.Function):
    """Exact rectified-Gaussian moments with their closed-form gradients.

    ``dE/dm = Phi``, ``dE/dv = phi / (2 s)``, ``dVar/dm = 2 E (1 - Phi)``, ``dVar/dv = Phi - E phi / s``
    (from ``dE[f(z)]/dv = E[f''(z)] / 2``). One fused backward instead of autograd's chain through
    every element-wise step: the same values, a fraction of the memory traffic.
    """

    @staticmethod
    def forward(ctx, m, v):
        s, _, cdf, pdf, mean, var = _rectified(m, v)
        ctx.save_for_backward(s, cdf, pdf, mean)
        return mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_mean, g_var):
        s, cdf, pdf, mean = ctx.saved_tensors
        pdf_s = pdf / s
        grad_m = g_mean * cdf + g_var * (2.0 * mean * (1.0 - cdf))
        grad_v = g_mean * (0.5 * pdf_s) + g_var * (cdf - mean * pdf_s)
        return grad_m, grad_v


def relu_moments(mean: torch.Tensor, var: Optional[torch.Tensor], mode: str = "exact") -> Moments:
    """Mean and variance of ``relu(z)`` for independent ``z ~ N(mean, var)``.

    ``exact``: the rectified Gaussian, ``E = m Phi(a) + s phi(a)`` with ``a = m / s`` and
    the matching variance. ``taylor``: first-order expansion around the mean (eVI).
    """
    if var is None:
        return F.relu(mean), None
    if mode == "taylor":
        return F.relu(mean), var * (mean > 0).to(var.dtype)
    return _ReLUMoments.apply(mean, var.clamp_min(0.0))


class _MaxMoments(torch.autograd.Function):
    """Clark's moments of max(z1, z2) = z2 + relu(z1 - z2), with closed-form gradients.

    With ``d = z1 - z2 ~ N(m1 - m2, v1 + v2)``, ``theta^2 = v1 + v2``, ``(M, V)`` the rectified
    moments of ``d``: ``E = m2 + M``, ``Var = v2 (1 - 2 Phi) + V``; the gradients follow from
    those of :class:`_ReLUMoments` and ``dPhi/d(m1 - m2) = phi / theta``,
    ``dPhi/dtheta^2 = -a phi / (2 theta^2)``.
    """

    @staticmethod
    def forward(ctx, m1, v1, m2, v2):
        theta, a, cdf, pdf, rect_mean, rect_var = _rectified(m1 - m2, v1 + v2)
        mean = m2 + rect_mean
        var = (v2 * (1.0 - 2.0 * cdf) + rect_var).clamp_min_(0.0)
        ctx.save_for_backward(theta, a, cdf, pdf, rect_mean, v2)
        return mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_mean, g_var):
        theta, a, cdf, pdf, rect_mean, v2 = ctx.saved_tensors
        pdf_t = pdf / theta
        # d(mean, var)/d(m1 - m2) and d/d(v1 + v2) of the rectified part and of v2 (1 - 2 Phi)
        g_d = g_mean * cdf + g_var * (2.0 * rect_mean * (1.0 - cdf) - 2.0 * v2 * pdf_t)
        g_t = g_mean * (0.5 * pdf_t) + g_var * (cdf - rect_mean * pdf_t + v2 * a * pdf_t / theta)
        grad_m1 = g_d
        grad_m2 = g_mean - g_d
        grad_v1 = g_t
        grad_v2 = g_t + g_var * (1.0 - 2.0 * cdf)
        return grad_m1, grad_v1, grad_m2, grad_v2


def gaussian_max_moments(m1: torch.Tensor, v1: torch.Tensor, m2: torch.Tensor, v2: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Clark's moments of ``max(z1, z2)`` for independent Gaussians ``z1 ~ N(m1, v1)``, ``z2 ~ N(m2, v2)``.

    Written as ``max = z2 + relu(z1 - z2)`` with Stein's lemma for the covariance term:
    ``Var = v2 (1 - 2 Phi(a)) + theta^2 r(a)``, ``theta^2 = v1 + v2``, ``a = (m1 - m2) / theta``.
    """
    return _MaxMoments.apply(m1, v1, m2, v2)


def _windows(x: torch.Tensor, k: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H // kh, W // kw, kh * kw): the non-overlapping pooling windows."""
    b, c, h, w = x.shape
    kh, kw = k
    ho, wo = h // kh, w // kw
    x = x[:, :, :ho * kh, :wo * kw].reshape(b, c, ho, kh, wo, kw)
    return x.permute(0, 1, 2, 4, 3, 5).reshape(b, c, ho, wo, kh * kw)


def maxpool_moments(mean: torch.Tensor, var: Optional[torch.Tensor], kernel_size, mode: str = "clark") -> Moments:
    """Moments of non-overlapping k x k max-pooling (stride k, no padding, floor mode).

    ``clark``: the window's elements are reduced pairwise with :func:`gaussian_max_moments`,
    each intermediate max treated as Gaussian and independent of the rest (a balanced
    tree: for 2x2, ``max(max(z1, z2), max(z3, z4))``). ``argmax``: the element of largest
    mean and its variance.
    """
    k = nn.modules.utils._pair(kernel_size)
    if var is None:
        return F.max_pool2d(mean, k, k), None
    if mode == "argmax":  # max-pool the means, and take each window's variance at the same position
        out_mean, idx = F.max_pool2d(mean, k, k, return_indices=True)
        out_var = var.flatten(2).gather(2, idx.flatten(2)).view_as(out_mean)
        return out_mean, out_var
    mw, vw = _windows(mean, k), _windows(var, k)
    ms = [mw[..., i] for i in range(mw.shape[-1])]
    vs = [vw[..., i] for i in range(vw.shape[-1])]
    while len(ms) > 1:
        nm, nv = [], []
        for i in range(0, len(ms) - 1, 2):
            m, v = gaussian_max_moments(ms[i], vs[i], ms[i + 1], vs[i + 1])
            nm.append(m)
            nv.append(v)
        if len(ms) % 2:
            nm.append(ms[-1])
            nv.append(vs[-1])
        ms, vs = nm, nv
    return ms[0], vs[0]


def linear_moments(mean: torch.Tensor, var: Optional[torch.Tensor], op, w_mu: torch.Tensor,
                   w_var: Optional[torch.Tensor], b_mu: Optional[torch.Tensor], b_var: Optional[torch.Tensor],
                   channel_shape: tuple[int, ...]) -> Moments:
    """Moments of ``op(x, W, b)`` (linear in x and in W) for independent Gaussian x, W, b.

    ``w_var`` is either per weight (shape of ``w_mu``), shared per output unit
    (``(out, 1, ...)``: the eVI kernel-shared variance) or None (deterministic weights).
    ``channel_shape`` reshapes a per-output vector to broadcast over ``op``'s output.
    """
    out_mean = op(mean, w_mu, b_mu)
    out_var = None
    if var is not None:
        out_var = op(var, w_mu * w_mu, None)
    if w_var is not None:
        second = mean * mean if var is None else mean * mean + var
        if w_var.shape == w_mu.shape:
            term = op(second, w_var, None)
        else:  # one variance per output unit: sum the input's second moment under a ones kernel once
            ones = torch.ones((1,) + tuple(w_mu.shape[1:]), dtype=w_mu.dtype, device=w_mu.device)
            term = op(second, ones, None) * w_var.reshape(channel_shape)
        out_var = term if out_var is None else out_var + term
    if b_var is not None:
        b_var = b_var.reshape(channel_shape)
        out_var = b_var.expand_as(out_mean) if out_var is None else out_var + b_var
    return out_mean, out_var


def bayes_layer_moments(layer: BayesLayer, name: str, guide, mean: torch.Tensor,
                        var: Optional[torch.Tensor]) -> Moments:
    """Moments of a Bayesian layer's output under the guide's Gaussian weights."""
    lw, sw, lb, sb = guide.layer_params(name, layer, expand=False)
    channel = (1, -1, 1, 1) if isinstance(layer, BayesConv2d) else (1, -1)
    out_mean, out_var = linear_moments(mean, var, layer.op, lw, sw * sw, lb, None if sb is None else sb * sb, channel)
    post = guide.group_scales_of(name) if hasattr(guide, "group_scales_of") else None
    if post is None:
        return out_mean, out_var
    # a group prior multiplies the unit's output a by its scale z (independent of a):
    # E[z a] = E[z] E[a], Var[z a] = E[z^2] (E[a]^2 + Var[a]) - E[z]^2 E[a]^2
    mean_z, second_z = post.mean().reshape(channel), post.second_moment().reshape(channel)
    a2 = out_mean.square() + (0.0 if out_var is None else out_var)
    scaled_mean = mean_z * out_mean
    return scaled_mean, (second_z * a2 - scaled_mean.square()).clamp_min(0.0)


def _plain_layer_moments(layer: nn.Module, mean: torch.Tensor, var: Optional[torch.Tensor]) -> Moments:
    if isinstance(layer, nn.Linear):
        op, channel = (lambda x, w, b: F.linear(x, w, b)), (1, -1)
    else:
        def op(x, w, b):
            return F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)
        channel = (1, -1, 1, 1)
        if layer.padding_mode != "zeros":
            raise UnsupportedLayerError(f"moment propagation supports Conv2d with zero padding only, got "
                                        f"padding_mode={layer.padding_mode!r}")
    return linear_moments(mean, var, op, layer.weight, None, layer.bias, None, channel)


def _leaf_layers(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The network's layers in forward order, descending into nested Sequentials."""
    out = []
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            out.extend(_leaf_layers(child, full))
        else:
            out.append((full, child))
    return out


def _layer_moments(name: str, layer: nn.Module, guide, mean: torch.Tensor, var: Optional[torch.Tensor],
                   relu: str, pool: str) -> Moments:
    if isinstance(layer, (BayesLinear, BayesConv2d)):
        return bayes_layer_moments(layer, name, guide, mean, var)
    if isinstance(layer, BayesLayer):
        raise UnsupportedLayerError(f"moment propagation does not support Bayesian layer {name!r} of type "
                                    f"{type(layer).__name__}; supported layers: {SUPPORTED}")
    if ((isinstance(layer, nn.Linear) and type(layer).forward is nn.Linear.forward)
            or (isinstance(layer, nn.Conv2d) and type(layer).forward is nn.Conv2d.forward)):
        return _plain_layer_moments(layer, mean, var)
    if isinstance(layer, nn.ReLU):
        return relu_moments(mean, var, relu)
    if isinstance(layer, nn.MaxPool2d):
        k = nn.modules.utils._pair(layer.kernel_size)
        stride = nn.modules.utils._pair(layer.stride if layer.stride is not None else layer.kernel_size)
        if (stride != k or nn.modules.utils._pair(layer.padding) != (0, 0)
                or nn.modules.utils._pair(layer.dilation) != (1, 1) or layer.ceil_mode or layer.return_indices):
            raise UnsupportedLayerError(
                f"moment propagation does not support layer {name!r} ({layer}): only non-overlapping max-pooling "
                f"is supported (stride == kernel_size, no padding, dilation 1, floor mode)")
        return maxpool_moments(mean, var, k, pool)
    if isinstance(layer, nn.Flatten):
        return layer(mean), (None if var is None else layer(var))
    if isinstance(layer, (nn.Dropout, nn.Identity)):
        return mean, var
    raise UnsupportedLayerError(f"moment propagation does not support layer {name!r} of type "
                                f"{type(layer).__name__}; supported layers: {SUPPORTED}")


def propagate_moments(model: BayesianModel, guide, x: torch.Tensor, relu: str = "exact",
                      pool: str = "clark") -> tuple[torch.Tensor, torch.Tensor]:
    """Propagate a deterministic input through ``model.net`` under ``guide``: the logits' (mean, var).

    Returns two (B, C) tensors; differentiable in the guide's parameters. ``relu`` is
    ``"exact"`` or ``"taylor"``, ``pool`` is ``"clark"`` or ``"argmax"`` (see the module doc).
    """
    if not isinstance(model, BayesianModel):
        raise TypeError("propagate_moments needs a pyrocompress BayesianModel")
    if not hasattr(guide, "layer_params"):
        raise TypeError("propagate_moments needs a pyrocompress MeanFieldGuide (Gaussian loc / scale per site)")
    relu = _check_mode(relu, RELU_MODES, "relu mode")
    pool = _check_mode(pool, POOL_MODES, "pool mode")
    mean: torch.Tensor = x
    var: Optional[torch.Tensor] = None
    for name, layer in _leaf_layers(model.net):
        mean, var = _layer_moments(name, layer, guide, mean, var, relu, pool)
    if var is None:  # pragma: no cover - a BayesianModel has at least one Bayesian layer
        var = torch.zeros_like(mean)
    return mean, var


def sample_logits(model: BayesianModel, guide, x: torch.Tensor, num_samples: int, relu: str = "exact",
                  pool: str = "clark") -> torch.Tensor:
    """(S, B, C) draws from the propagated Gaussian logits (the moment-propagation predictive)."""
    mean, var = propagate_moments(model, guide, x, relu=relu, pool=pool)
    eps = torch.randn((int(num_samples),) + tuple(mean.shape), dtype=mean.dtype, device=mean.device)
    return mean + torch.sqrt(var.clamp_min(0.0)) * eps


# --------------------------------------------------------------------- estimator names
_OPTION_KEYS = {"relu": RELU_MODES, "pool": POOL_MODES, "likelihood": LIKELIHOODS, "logit_samples": None}


def is_moment_estimator(name) -> bool:
    """Whether an estimator name asks for moment propagation (``moment_propagation[:options]``)."""
    return str(name).lower().replace("-", "_").partition(":")[0] == "moment_propagation"


def moment_options(name: str) -> dict:
    """Parse ``moment_propagation[:key=value,...]`` into :class:`MomentPropagationELBO` options.

    Keys: ``relu`` (exact / taylor), ``pool`` (clark / argmax), ``likelihood`` (sampled /
    probit / gaussian), ``logit_samples`` (a positive integer). The name travels through
    ``fit(estimator=...)``, ``TrainConfig.estimator`` and ``--estimator`` unchanged, e.g.
    ``moment_propagation:relu=taylor,pool=argmax`` (the eVI paper's first-order rules).
    """
    head, _, rest = str(name).partition(":")
    if not is_moment_estimator(head):
        raise UserError(f"{name!r} is not a moment-propagation estimator (moment_propagation[:key=value,...])")
    options: dict = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip().lower()
        if not sep or key not in _OPTION_KEYS:
            raise UserError(f"bad moment-propagation option {item!r} in {name!r}; write key=value with keys "
                             f"{sorted(_OPTION_KEYS)}, e.g. moment_propagation:relu=taylor,pool=argmax")
        if key == "logit_samples":
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"logit_samples must be a positive integer, got {value!r} in {name!r}")
            options[key] = int(value)
        else:
            options[key] = _check_mode(value, _OPTION_KEYS[key], key)
    return options


# --------------------------------------------------------------------- likelihoods
def probit_probs(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Probit-style approximation of E[softmax(z)], z ~ N(mean, diag var): softmax(mean / sqrt(1 + pi var / 8))."""
    return F.softmax(mean / torch.sqrt(1.0 + (math.pi / 8.0) * var), dim=-1)


def logit_nll(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor, likelihood: str = "sampled",
              num_samples: int = 16, gaussian_eps: float = 1e-3) -> torch.Tensor:
    """Summed (over the batch) negative log-likelihood of labels ``y`` under Gaussian logits.

    * ``sampled``: ``-E[log softmax(z)_y]`` estimated with ``num_samples`` reparameterised
      draws of ``z ~ N(mean, diag var)`` (unbiased; keeps the ELBO a bound);
    * ``probit``: ``-log softmax(mean / sqrt(1 + pi var / 8))_y``, the probit-style
      approximation of the log *predictive* probability (deterministic, not a bound);
    * ``gaussian``: the eVI papers' loss, the Gaussian NLL of the one-hot label under the
      softmax output's mean and (first-order, diagonal) variance, plus ``gaussian_eps``.
    """
    if likelihood == "sampled":
        eps = torch.randn((int(num_samples),) + tuple(mean.shape), dtype=mean.dtype, device=mean.device)
        z = mean + torch.sqrt(var.clamp_min(0.0) + _TINY_VAR) * eps
        logp = F.log_softmax(z, dim=-1)
        picked = logp.gather(-1, y.view(1, -1, 1).expand(z.shape[0], -1, 1)).squeeze(-1)
        return -picked.mean(0).sum()
    if likelihood == "probit":
        return F.cross_entropy(mean / torch.sqrt(1.0 + (math.pi / 8.0) * var), y, reduction="sum")
    if likelihood == "gaussian":
        p = F.softmax(mean, dim=-1)
        # diag(J diag(var) J^T), J = diag(p) - p p^T: p_c^2 [var_c (1 - 2 p_c) + sum_k p_k^2 var_k]
        out_var = p * p * (var * (1.0 - 2.0 * p) + (p * p * var).sum(-1, keepdim=True))
        out_var = out_var.clamp_min(0.0) + gaussian_eps
        onehot = F.one_hot(y, mean.shape[-1]).to(mean.dtype)
        return 0.5 * (((onehot - p) ** 2) / out_var + torch.log(out_var)).sum()
    raise UserError(f"unknown likelihood {likelihood!r}; valid: {list(LIKELIHOODS)}")


# --------------------------------------------------------------------- the ELBO
class MomentPropagationELBO(MeanFieldELBO):
    """Negative ELBO with the expected log-likelihood from propagated moments (no weight sampling).

    ``relu`` / ``pool`` choose the moment rules (see the module doc); ``likelihood`` the
    loss on the Gaussian logits (:func:`logit_nll`). The number of logit draws of the
    ``sampled`` likelihood is ``logit_samples * num_particles`` (draws are cheap: only the
    B x C logits are sampled). The KL is the guide's closed form, as in :class:`MeanFieldELBO`.
    """

    def __init__(self, num_particles: int = 1, kl_weight: float = 1.0, relu: str = "exact", pool: str = "clark",
                 likelihood: str = "sampled", logit_samples: int = 16, gaussian_eps: float = 1e-3) -> None:
        super().__init__(estimator="moment_propagation", num_particles=num_particles, kl_weight=kl_weight)
        self.relu = _check_mode(relu, RELU_MODES, "relu mode")
        self.pool = _check_mode(pool, POOL_MODES, "pool mode")
        self.likelihood = _check_mode(likelihood, LIKELIHOODS, "likelihood")
        if int(logit_samples) < 1:
            raise UserError(f"logit_samples must be >= 1, got {logit_samples}")
        self.logit_samples = int(logit_samples)
        self.gaussian_eps = float(gaussian_eps)

    @classmethod
    def from_name(cls, name: str, num_particles: int = 1, kl_weight: float = 1.0) -> "MomentPropagationELBO":
        """The ELBO an estimator name ``moment_propagation[:key=value,...]`` asks for."""
        return cls(num_particles=num_particles, kl_weight=kl_weight, **moment_options(name))

    def _handler(self, guide):  # pragma: no cover - no layer handler: moments are propagated directly
        raise NotImplementedError("MomentPropagationELBO propagates moments; it has no layer handler")

    def loss_terms(self, model: BayesianModel, guide, x: torch.Tensor, y: torch.Tensor,
                   return_logits: bool = False):
        """(scaled minibatch NLL, KL), optionally with the propagated logit means (B, C)."""
        self._check(model, guide)
        mean, var = propagate_moments(model, guide, x, relu=self.relu, pool=self.pool)
        lik = model.likelihood
        if getattr(lik, "noise_scale", None) is not None:
            # regression, y ~ N(f, s^2): E[-log N(y | f, s^2)] under f ~ N(mean, var) in closed form
            f_mean, f_var = mean.reshape(mean.shape[0]), var.reshape(var.shape[0])
            s2 = float(lik.noise_scale) ** 2
            nll = (0.5 * ((y - f_mean) ** 2 + f_var) / s2 + 0.5 * math.log(2.0 * math.pi * s2)).sum()
        elif getattr(lik, "num_classes", None):
            nll = logit_nll(mean, var, y, self.likelihood, self.logit_samples * self.num_particles,
                            self.gaussian_eps)
        else:
            raise TypeError(f"MomentPropagationELBO supports categorical and Gaussian likelihoods, not "
                            f"{type(lik).__name__}")
        nll = nll * lik.scale(x.shape[0])
        kl = guide.kl_divergence(model)
        if return_logits:
            return nll, kl, mean
        return nll, kl

    def _get_trace(self, model, guide, args, kwargs):  # pragma: no cover - nothing is traced
        raise NotImplementedError("MomentPropagationELBO computes its terms without traces")
