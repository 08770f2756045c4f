"""What every baseline needs: its network copied and placed, training with masks held, validation metrics."""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ...errors import UserError
from ...data import DataBundle
from ...infer.fit import FitResult, fit_deterministic, resolve_device
from ...infer.predictive import network_probs
from ...metrics import classification_metrics
from ...names import Structure
from ...nn.model import BayesianModel
from ..importance import plain_layers
from ..masks import Masks, layer_shapes
from ..policy import candidate_layers
from ..policy import output_layer as policy_output_layer

__all__ = ["FIT_OPTIONS", "check_count", "prunable_layers", "output_layer", "candidates", "check_fit_options",
           "fit_net", "val_metrics", "state_of", "prepare", "weight_sparsity", "finetune_list", "rounds_bar"]

#: keyword options forwarded to :func:`pyrocompress.infer.fit_deterministic` for (re)training.
FIT_OPTIONS = ("batch_size", "lr", "optimizer", "lr_schedule", "seed", "device", "weight_decay", "clip_norm",
               "progress")


def check_count(value: Any, what: str, minimum: int = 0) -> int:
    """An integer >= ``minimum`` (booleans refused), or an error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def rounds_bar(rounds: Iterable[Any], total: int, desc: str, options: Mapping[str, Any], initial: int = 0) -> tqdm:
    """``rounds`` with a progress bar (ETA) over a method's pruning / retraining rounds, shown when the fit
    options ask for progress (each round's training shows its own bar below it); ``initial`` rounds were
    already done (cached)."""
    return tqdm(rounds, total=total, initial=initial, desc=desc, unit="round", disable=not options.get("progress"),
                dynamic_ncols=True)


def prunable_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv2d layers of a plain network, in module order."""
    return plain_layers(net)


def output_layer(net: nn.Module) -> str:
    """Name of the last prunable layer (the classifier): structured pruning never removes its units."""
    return prunable_layers(net)[-1][0]


def candidates(net: nn.Module, structure: Structure, ignored_layers: Sequence[str]) -> list[str]:
    """The layers a policy of ``structure`` may prune in ``net``."""
    shapes = layer_shapes(net)
    return candidate_layers(shapes, structure, policy_output_layer(shapes), tuple(ignored_layers))


def check_fit_options(options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Keyword options of :func:`~pyrocompress.infer.fit_deterministic`; unknown keys name the valid ones."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(FIT_OPTIONS))
    if unknown:
        raise UserError(f"unknown fit options {unknown}; valid options: {list(FIT_OPTIONS)}")
    return opts


def fit_net(net: nn.Module, data: DataBundle, epochs: int, options: dict[str, Any],
            hook: Optional[Callable]) -> FitResult:
    """Train ``net`` ``epochs`` epochs with ``options``, calling ``hook(net)`` after every step."""
    return fit_deterministic(net, data, epochs=epochs, step_hook=hook, **options)


def val_metrics(net: nn.Module, data: Optional[DataBundle]) -> dict[str, float]:
    """Validation accuracy and NLL of a plain network (empty without a validation split)."""
    if data is None or len(data.val) == 0:
        return {}
    device = next(net.parameters()).device
    m = classification_metrics(network_probs(net, data.val.x.to(device)), data.val.y.to(device))
    return {"val_accuracy": m["accuracy"], "val_nll": m["nll"]}


def state_of(net: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``net``'s state."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def prepare(net: nn.Module, inplace: bool, device: Optional[str]) -> nn.Module:
    """The plain network a baseline works on: ``net`` itself or a copy, on ``device``."""
    if isinstance(net, BayesianModel):
        raise TypeError("this baseline prunes a plain network; for a Bayesian model rank with "
                        "importances(model, 'magnitude', guide=guide) and prune through PrunePolicy / Masks")
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(net).__name__}")
    out = net if inplace else copy.deepcopy(net)
    if device is not None:
        out.to(resolve_device(device))
    return out


def weight_sparsity(net: nn.Module, masks: Masks) -> float:
    """Sparsity over every prunable layer's weights (unmasked layers count as dense)."""
    total = kept = 0
    for name, layer in prunable_layers(net):
        n = layer.weight.numel()
        total += n
        kept += int(masks.weight[name].sum()) if name in masks.weight else n
    return 1.0 - kept / max(total, 1)


def finetune_list(finetune_epochs: Union[int, Sequence[int]], rounds: int) -> list[int]:
    """Fine-tuning epochs per round: one number for every round, or one per round."""
    if isinstance(finetune_epochs, (list, tuple)):
        if len(finetune_epochs) != rounds:
            raise UserError(f"finetune_epochs lists {len(finetune_epochs)} rounds, rounds is {rounds}")
        return [check_count(e, "finetune_epochs") for e in finetune_epochs]
    return [check_count(finetune_epochs, "finetune_epochs")] * rounds
