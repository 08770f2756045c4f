"""Pruning masks that compose and apply alike to plain networks and to Bayesian models.

A :class:`Masks` maps layer names to boolean keep-masks of the layer's weight shape
(``True`` = keep), with optional bias masks of shape ``(out,)`` (structured pruning masks
the bias of a deleted unit too). Masks compose with ``&`` (logical AND; a layer absent
from one side is kept whole by it).

Applying masks (:meth:`Masks.apply`):

* to a plain ``nn.Module``: masked weights (and biases) are set to zero in place;
* to a :class:`~pyrocompress.nn.BayesianModel` with its
  :class:`~pyrocompress.infer.MeanFieldGuide`: masked locations are set to exactly zero
  and their posterior standard deviation to :data:`MASKED_SCALE` = 1e-8
  (:meth:`~pyrocompress.infer.guides.MeanFieldGuide.mask_`): zero variance to float
  precision, while the variance of a sampled pre-activation stays positive so that SVI
  gradients stay finite. Layers of the model left
  deterministic are zeroed like a plain network's.

During fine-tuning, :meth:`Masks.step_hook` returns a function for the ``step_hook``
argument of :func:`~pyrocompress.infer.fit` (called as ``hook(model, guide)``) and of
:func:`~pyrocompress.infer.fit_deterministic` (``hook(net)``) that re-applies the masks
after every optimiser step, so pruned weights stay pruned.

:class:`MaskLayers` is the same masking as a Pyro effect handler on the ``"bayes_layer"``
effect: it masks the weights a layer is computed with, whatever computes them, without
touching any parameter (for what-if evaluation, or with guides other than
MeanFieldGuide). It composes with the estimator handlers when entered *inside* them
(``with LocalReparameterization(guide), MaskLayers(masks): logits = model.net(x)``),
because Pyro runs the innermost handler first. For SVI training prefer ``apply`` +
``step_hook``: a unit masked by the handler alone has zero pre-activation variance,
whose square root has no gradient.

Public API: ``Masks`` (``ones``, ``from_units``, ``&``, ``apply``, ``step_hook``,
``unit_keep``, ``summary``, ``sparsity``, ``to_tensors``/``from_tensors``),
``MaskLayers``, ``layer_shapes``, ``prunable_layers``, ``MASKED_SCALE``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn
from pyro.poutine.messenger import Messenger

from ..errors import UserError
from ..infer.guides import MASKED_SCALE, is_posterior_guide
from ..nn.layers import BayesLayer
from ..nn.model import BayesianModel

__all__ = ["Masks", "MaskLayers", "layer_shapes", "prunable_layers", "MASKED_SCALE"]



def prunable_layers(obj: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear / Conv2d layers (Bayesian or plain) of a network or BayesianModel, in forward order.

    For a BayesianModel the names are those of ``model.net`` (the Pyro site prefixes).
    """
    net = obj.net if isinstance(obj, BayesianModel) else obj
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected an nn.Module or BayesianModel, got {type(obj).__name__}")
    return [(n, m) for n, m in net.named_modules()
            if n and isinstance(m, (BayesLayer, nn.Linear, nn.Conv2d))]


def layer_shapes(obj: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{layer: weight shape}`` of every Linear / Conv2d layer (Bayesian or plain)."""
    out = {}
    for name, m in prunable_layers(obj):
        out[name] = tuple(m.weight_shape) if isinstance(m, BayesLayer) else tuple(m.weight.shape)
    return out


def _as_bool(t: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    return t.detach().to(torch.bool).cpu()


class Masks:
    """Boolean keep-masks per layer: ``weight[layer]`` (weight shape), ``bias[layer]`` (``(out,)``).

    A layer absent from ``weight`` is kept whole; a layer in ``weight`` but not in
    ``bias`` keeps its bias (unstructured pruning never masks biases).
    """

    def __init__(self, weight: Mapping[str, torch.Tensor], bias: Optional[Mapping[str, torch.Tensor]] = None) -> None:
        self.weight: dict[str, torch.Tensor] = {k: _as_bool(v, f"weight mask of {k!r}") for k, v in weight.items()}
        self.bias: dict[str, torch.Tensor] = {k: _as_bool(v, f"bias mask of {k!r}") for k, v in (bias or {}).items()}
        for name, b in self.bias.items():
            if b.dim() != 1:
                raise UserError(f"bias mask of {name!r} must be 1-D, got shape {tuple(b.shape)}")
            if name in self.weight and self.weight[name].shape[0] != b.shape[0]:
                raise UserError(f"bias mask of {name!r} has {b.shape[0]} units, its weight mask "
                                 f"{self.weight[name].shape[0]}")

    # ------------------------------------------------------------ building
    @classmethod
    def ones(cls, obj: nn.Module) -> "Masks":
        """Masks keeping everything, for every Linear / Conv2d layer of a network or model."""
        return cls({n: torch.ones(s, dtype=torch.bool) for n, s in layer_shapes(obj).items()})

    @classmethod
    def from_units(cls, keep: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]],
                   mask_bias: bool = True) -> "Masks":
        """Structured masks from per-layer unit keep vectors ``(out,)`` (neurons / kernels).

        A deleted unit loses its whole weight slice and, with ``mask_bias``, its bias.
        """
        weight, bias = {}, {}
        for name, k in keep.items():
            if name not in shapes:
                raise UserError(f"unknown layer {name!r}; layers: {sorted(shapes)}")
            k = _as_bool(k, f"unit keep vector of {name!r}")
            shape = tuple(shapes[name])
            if k.shape != (shape[0],):
                raise UserError(f"unit keep vector of {name!r} has shape {tuple(k.shape)}, expected ({shape[0]},)")
            weight[name] = k.reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape).clone()
            if mask_bias:
                bias[name] = k.clone()
        return cls(weight, bias)

    def __and__(self, other: "Masks") -> "Masks":
        if not isinstance(other, Masks):
            return NotImplemented
        weight = dict(self.weight)
        for name, m in other.weight.items():
            if name in weight:
                if weight[name].shape != m.shape:
                    raise UserError(f"cannot combine masks of {name!r}: shapes {tuple(weight[name].shape)} "
                                     f"and {tuple(m.shape)}")
                weight[name] = weight[name] & m
            else:
                weight[name] = m.clone()
        bias = dict(self.bias)
        for name, m in other.bias.items():
            bias[name] = bias[name] & m if name in bias else m.clone()
        return Masks(weight, bias)

    # ---------------------------------------------------------- inspecting
    def layers(self) -> list[str]:
        return list(dict.fromkeys(list(self.weight) + list(self.bias)))

    def unit_keep(self, layer: str) -> Optional[torch.Tensor]:
        """Units of a layer not fully deleted by the mask (some weight kept), or None if unmasked."""
        if layer not in self.weight:
            return None
        w = self.weight[layer]
        return w.reshape(w.shape[0], -1).any(dim=1)

    def summary(self) -> dict[str, dict[str, int]]:
        """Per masked layer: weights kept / total and units kept / total."""
        out = {}
        for name, w in self.weight.items():
            units = self.unit_keep(name)
            out[name] = {"weights_kept": int(w.sum()), "weights": w.numel(),
                         "units_kept": int(units.sum()), "units": int(units.numel())}
        return out

    def sparsity(self) -> float:
        """Fraction of masked-out weights over the masked layers."""
        total = sum(w.numel() for w in self.weight.values())
        kept = sum(int(w.sum()) for w in self.weight.values())
        return 0.0 if total == 0 else 1.0 - kept / total

    def check(self, obj: nn.Module) -> None:
        """Raise a clear error if a mask names an unknown layer or has the wrong shape."""
        shapes = layer_shapes(obj)
        for name, m in self.weight.items():
            if name not in shapes:
                raise UserError(f"mask for unknown layer {name!r}; layers: {sorted(shapes)}")
            if tuple(m.shape) != tuple(shapes[name]):
                raise UserError(f"mask of {name!r} has shape {tuple(m.shape)}, the weight {tuple(shapes[name])}")
        for name, b in self.bias.items():
            if name not in shapes:
                raise UserError(f"bias mask for unknown layer {name!r}; layers: {sorted(shapes)}")
            if b.shape[0] != shapes[name][0]:
                raise UserError(f"bias mask of {name!r} has {b.shape[0]} units, the layer {shapes[name][0]}")

    # ------------------------------------------------------------ applying
    @torch.no_grad()
    def apply(self, obj: nn.Module, guide: Any = None) -> None:
        """Zero the masked weights in place (see the module docstring for the Bayesian case).

        ``obj`` is a plain network, or a BayesianModel together with its MeanFieldGuide.
        """
        self.check(obj)
        if isinstance(obj, BayesianModel):
            if guide is None:
                raise UserError("masking a BayesianModel needs its guide: masks.apply(model, guide)")
            if not is_posterior_guide(guide):
                raise TypeError(f"masks apply to a pyrocompress guide, got {type(guide).__name__}; "
                                "use the MaskLayers handler with other guides")
            guide.check_belongs_to(obj)
            bayes = dict(obj.bayes_layers())
            plain = dict(prunable_layers(obj))
            for name in self.layers():
                if name in bayes:
                    self._apply_guide_site(guide, f"{name}.weight", self.weight.get(name))
                    if bayes[name].has_bias:
                        self._apply_guide_site(guide, f"{name}.bias", self.bias.get(name))
                else:
                    self._apply_module(plain[name], name)
        else:
            modules = dict(prunable_layers(obj))
            for name in self.layers():
                m = modules[name]
                if isinstance(m, BayesLayer):
                    raise TypeError(f"layer {name!r} is Bayesian: pass the BayesianModel and its guide")
                self._apply_module(m, name)

    def _apply_module(self, m: nn.Module, name: str) -> None:
        w = self.weight.get(name)
        if w is not None:
            m.weight.mul_(w.to(m.weight.device, m.weight.dtype))
        b = self.bias.get(name)
        if b is not None and m.bias is not None:
            m.bias.mul_(b.to(m.bias.device, m.bias.dtype))

    @staticmethod
    def _apply_guide_site(guide: Any, site: str, mask: Optional[torch.Tensor]) -> None:
        if mask is not None:
            guide.mask_(site, mask)

    def step_hook(self) -> Callable[..., None]:
        """A function for ``fit(step_hook=...)`` / ``fit_deterministic(step_hook=...)`` re-applying the masks."""
        masks = self

        def hook(obj: nn.Module, guide: Any = None) -> None:
            masks.apply(obj, guide)

        return hook

    # ---------------------------------------------------------------- I/O
    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensor dict (uint8) for safetensors: ``weight::<layer>``, ``bias::<layer>``."""
        out = {f"weight::{k}": v.to(torch.uint8) for k, v in self.weight.items()}
        out.update({f"bias::{k}": v.to(torch.uint8) for k, v in self.bias.items()})
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> "Masks":
        weight, bias = {}, {}
        for key, value in tensors.items():
            kind, sep, name = key.partition("::")
            if not sep or kind not in ("weight", "bias"):
                raise UserError(f"not a mask tensor name: {key!r} (expected weight::<layer> or bias::<layer>)")
            (weight if kind == "weight" else bias)[name] = value
        return cls(weight, bias)

    def __repr__(self) -> str:
        parts = [f"{n}: {s['weights_kept']}/{s['weights']} w, {s['units_kept']}/{s['units']} units"
                 for n, s in self.summary().items()]
        return "Masks(" + "; ".join(parts) + ")"


class _MaskedLayer:
    """A view of a Bayesian layer whose ``op`` multiplies weight and bias by masks."""

    def __init__(self, layer: BayesLayer, weight_mask: Optional[torch.Tensor], bias_mask: Optional[torch.Tensor]):
        object.__setattr__(self, "_layer", layer)
        object.__setattr__(self, "_wm", weight_mask)
        object.__setattr__(self, "_bm", bias_mask)

    @property
    def __class__(self):  # isinstance(view, BayesConv2d) holds, so estimators treat it as the layer
        return type(self._layer)

    def __getattr__(self, name: str):
        return getattr(self._layer, name)

    def op(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        if self._wm is not None:
            weight = weight * self._wm.to(weight.device, weight.dtype)
        if bias is not None and self._bm is not None:
            bias = bias * self._bm.to(bias.device, bias.dtype)
        return self._layer.op(x, weight, bias)


class MaskLayers(Messenger):
    """Pyro effect handler masking the weights every Bayesian layer is computed with.

    Enter it inside an estimator handler (innermost handlers run first)::

        with PosteriorMean(guide), MaskLayers(masks):
            logits = model.net(x)

    Without an estimator, the layer samples its weights from its sites and the masks
    multiply the samples. Parameters are never modified.
    """

    def __init__(self, masks: Masks) -> None:
        super().__init__()
        if not isinstance(masks, Masks):
            raise TypeError(f"MaskLayers needs a Masks object, got {type(masks).__name__}")
        self.masks = masks

    def _pyro_bayes_layer(self, msg) -> None:
        layer, x = msg["args"]
        name = layer._pyro_name
        wm, bm = self.masks.weight.get(name), self.masks.bias.get(name)
        if wm is not None or bm is not None:
            msg["args"] = (_MaskedLayer(layer, wm, bm), x)
