"""Model zoo: deterministic architectures by name, sized from the data's shape.

Every model is an ``nn.Sequential`` of named layers, so that moment propagation and
structured deletion can walk it; :func:`pyrocompress.nn.bayesianize` turns any of them
into a Pyro model.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Callable, Mapping

import torch
from torch import nn

from .._memory import check_memory
from ..errors import UserError

__all__ = ["MODELS", "MODEL_ALIASES", "build_model", "model_name", "model_options", "check_model_options",
           "model_parameter_count", "mlp", "lenet5", "kernelnet"]


def _check_shape(input_shape, num_classes, name: str) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(s) <= 0 for s in input_shape):
        raise UserError(f"{name}: input_shape must be (channels, height, width) with positive sizes, got {input_shape}")
    if int(num_classes) < 2:
        raise UserError(f"{name}: num_classes must be >= 2, got {num_classes}")
    return tuple(int(s) for s in input_shape)  # type: ignore[return-value]


def _conv_out(size: int, kernel: int, pool: int = 1) -> int:
    return (size - kernel + 1) // pool


def mlp(input_shape, num_classes: int, hidden: tuple[int, ...] = (300, 100)) -> nn.Sequential:
    """LeNet-300-100: in -> 300 -> 100 -> classes, ReLU between (``hidden`` is configurable)."""
    c, h, w = _check_shape(input_shape, num_classes, "mlp")
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = c * h * w
    for i, units in enumerate(hidden, start=1):
        layers += [(f"fc{i}", nn.Linear(width, int(units))), (f"relu{i}", nn.ReLU())]
        width = int(units)
    layers.append((f"fc{len(hidden) + 1}", nn.Linear(width, int(num_classes))))
    return nn.Sequential(OrderedDict(layers))


def lenet5(input_shape, num_classes: int, channels: tuple[int, int] = (20, 50), hidden: int = 500) -> nn.Sequential:
    """LeNet-5 (Caffe variant): conv 20 5x5, max-pool, conv 50 5x5, max-pool, fc 500, ReLU, fc classes.

    Inputs smaller than 28x28 (the 8x8 digits) get ``padding=2`` on both convolutions so
    the feature maps stay at least 1x1.
    """
    c, h, w = _check_shape(input_shape, num_classes, "lenet5")
    pad = 0 if min(h, w) >= 16 else 2
    k = 5
    h1, w1 = (h + 2 * pad - k + 1) // 2, (w + 2 * pad - k + 1) // 2
    h2, w2 = (h1 + 2 * pad - k + 1) // 2, (w1 + 2 * pad - k + 1) // 2
    if min(h2, w2) < 1:
        raise UserError(f"lenet5: input {input_shape} is too small for two 5x5 conv + pool stages")
    c1, c2 = int(channels[0]), int(channels[1])
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c, c1, k, padding=pad)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(c1, c2, k, padding=pad)),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(c2 * h2 * w2, int(hidden))),
        ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(int(hidden), int(num_classes))),
    ]))


def kernelnet(input_shape, num_classes: int, kernels: int = 32, kernel_size: int = 5) -> nn.Sequential:
    """The network of "Self-Compression in Bayesian Neural Networks".

    One conv layer of ``kernels`` 5x5 kernels (valid padding), ReLU, 2x2 max-pool,
    flatten, one Linear layer to the classes.
    """
    c, h, w = _check_shape(input_shape, num_classes, "kernelnet")
    if int(kernels) < 1:
        raise UserError(f"kernelnet: kernels must be >= 1, got {kernels}")
    k = int(kernel_size)
    ho, wo = _conv_out(h, k, 2), _conv_out(w, k, 2)
    if min(ho, wo) < 1:
        raise UserError(f"kernelnet: input {input_shape} is too small for a {k}x{k} conv + 2x2 pool")
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(c, int(kernels), k)),
        ("relu", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(int(kernels) * ho * wo, int(num_classes))),
    ]))


MODELS: dict[str, Callable[..., nn.Sequential]] = {"mlp": mlp, "lenet5": lenet5, "kernelnet": kernelnet}


#: other names of the zoo's models
MODEL_ALIASES = {"lenet300": "mlp", "lenet_300_100": "mlp", "lenet": "lenet5"}


def model_name(name: str) -> str:
    """The zoo's name of a model (``LeNet-300-100`` -> ``mlp``); unknown names list the valid ones."""
    key = str(name).lower().replace("-", "_")
    key = MODEL_ALIASES.get(key, key)
    if key not in MODELS:
        raise UserError(f"unknown model {name!r}; valid models: {sorted(MODELS)}")
    return key


def model_options(name: str) -> tuple[str, ...]:
    """The options a zoo model takes (its builder's keyword arguments after the input shape and classes)."""
    params = list(inspect.signature(MODELS[model_name(name)]).parameters.values())[2:]
    return tuple(p.name for p in params)


def check_model_options(name: str, options: Mapping[str, object]) -> None:
    """Raise a one-line error naming an option ``name`` does not take, and the ones it does."""
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(f"model {model_name(name)!r} has no option {unknown[0]!r}; valid options: {list(valid)}")


def model_parameter_count(name: str, input_shape, num_classes: int, **options) -> int:
    """The parameters of a zoo model, counted without allocating them (built on PyTorch's meta device).

    Bad options (an unknown name, a negative or non-integer size, an input too small for the
    model) raise a one-line :class:`~pyrocompress.errors.UserError`.
    """
    key = model_name(name)
    check_model_options(key, options)
    for option, value in options.items():  # every option of the zoo's models is a size or a list of sizes
        for size in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise UserError(f"model {key!r}: option {option}={value!r} must be a positive integer "
                                f"{'or a list of them ' if option == 'hidden' else ''}(sizes)")
    try:
        with torch.device("meta"):
            net = MODELS[key](input_shape, num_classes, **options)
    except UserError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise UserError(f"bad options for model {key!r} {dict(options)}: {exc}") from None
    return sum(p.numel() for p in net.parameters())


def build_model(name: str, input_shape, num_classes: int, **options) -> nn.Sequential:
    """Build a zoo model by name (``mlp``, ``lenet5``, ``kernelnet``).

    Its size is checked first, without allocating: options asking for more memory than the
    machine has (``hidden=[1000000000]``) are refused with the estimate.
    """
    key = model_name(name)
    count = model_parameter_count(key, input_shape, num_classes, **options)
    check_memory(4 * count, f"model {key!r} with {dict(options)} ({count:,} parameters)",
                 "choose smaller sizes")
    return MODELS[key](input_shape, num_classes, **options)
