"""Compression metrics: parameters, multiply-adds, bytes, posterior-guided bit widths, latency.

Definitions (all per example, for plain ``nn.Module`` networks of Linear / Conv2d layers):

* **params**: weights + biases; **nonzero**: those != 0. **compression ratio** =
  params of the dense reference / nonzero params of the compressed network
  (|w| / |w != 0|, Han et al. 2015; a shrunk network counts only what it still has).
* **MACs** are multiply-accumulates of Linear (``in * out``) and Conv2d layers
  (``out_h * out_w * k_h * k_w * in * out``), biases and activations not counted; one MAC
  is two FLOPs (what ``torch.utils.flop_counter.FlopCounterMode`` counts). *nonzero-aware*
  MACs count only nonzero weights (``out_h * out_w * nnz(weight)``). **theoretical
  speed-up** = dense MACs of the reference / nonzero MACs of the compressed network.
* **bytes**: ``dense`` = 4 bytes per parameter (fp32); ``csr`` = weights as a CSR matrix
  (rows = output units, columns = flattened fan-in): 4-byte values, column indices and
  row pointers in the smallest unsigned integer width that holds them (1, 2 or 4 bytes),
  biases dense; ``coo`` = 4-byte values and row and column indices (smallest widths).
* **posterior-guided bit widths** (in the spirit of Bayesian Compression, Louizos et al.
  2017): a weight needs no finer resolution than its posterior uncertainty, so each
  layer is quantised uniformly with a step no larger than the mean posterior standard
  deviation of its nonzero weights: ``bits = 1 + ceil(log2(max|mu| / mean sigma))``
  (sign + magnitude levels), clipped to [2, 32]. ``bytes.bits`` is the CSR size with
  values at those widths; :func:`quantize_network` applies them, and the report gives
  the accuracy after quantisation when data are given.
* **latency**: median time over ``repeats`` forward passes of a batch, measured with
  ``torch.utils.benchmark.Timer`` (a fixed thread count; CUDA synchronised) on the
  network's device (after warm-up), of the compressed network and of the dense
  reference, and their ratio (dense / compressed: > 1 means the compressed one is
  faster); the report names the device and thread count. Timings depend on the machine
  and its load.

Public API: ``layer_stats(net, input_shape)``, ``macs(net, input_shape)``,
``posterior_bits(net, scales)``, ``quantize_network(net, bits)``,
``measure_latency(net, input_shape)``, ``latency_of(...)``, ``posterior_scales(model, guide)``,
``compression_report(net, input_shape, reference=..., scales=..., split=...)``.
"""
from __future__ import annotations

import copy
import math
import statistics
import warnings
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.utils import benchmark

from ..errors import UserError
from ..infer.guides import is_posterior_guide
from ..infer.predictive import evaluate
from ..nn.layers import BayesLayer
from ..nn.model import BayesianModel

__all__ = ["layer_stats", "macs", "flops", "posterior_bits", "quantize_network", "measure_latency", "latency_of",
           "posterior_scales", "compression_report", "sparse_bytes", "index_bytes", "LEGACY_KEYS"]

#: result keys of earlier versions, which called multiply-adds "flops": read old files through this
LEGACY_KEYS = {"flops": "macs", "flops_nonzero": "macs_nonzero", "reference_flops": "reference_macs"}


def _layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    if isinstance(net, BayesianModel) or any(isinstance(m, BayesLayer) for m in net.modules()):
        raise TypeError("compression metrics apply to plain networks; use posterior_mean_network(model, guide) "
                        "or the shrunk .net")
    return [(n, m) for n, m in net.named_modules() if n and isinstance(m, (nn.Linear, nn.Conv2d))]


def _output_sizes(net: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every Linear / Conv2d layer for one example."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, m in _layers(net):
        def record(mod, inp, out, name=name):
            shapes[name] = tuple(out.shape[1:])

        hooks.append(m.register_forward_hook(record))
    try:
        param = next(net.parameters())
        x = torch.zeros((1,) + tuple(int(s) for s in input_shape), dtype=param.dtype, device=param.device)
        with torch.no_grad():
            was = net.training
            net.eval()
            try:
                net(x)
            finally:
                net.train(was)
    except RuntimeError as exc:
        raise UserError(f"input shape {tuple(input_shape)} does not fit the network: {exc}") from None
    finally:
        for h in hooks:
            h.remove()
    return shapes


def index_bytes(max_value: int) -> int:
    """The smallest unsigned integer width (1, 2 or 4 bytes) that holds ``max_value``."""
    if max_value < 2 ** 8:
        return 1
    if max_value < 2 ** 16:
        return 2
    return 4


def sparse_bytes(weight: torch.Tensor, value_bits: float = 32.0) -> dict[str, float]:
    """Bytes of a weight tensor stored as CSR and COO (rows = dim 0, columns = the rest flattened)."""
    w2 = weight.detach().reshape(weight.shape[0], -1)
    rows, cols = w2.shape
    nnz = int((w2 != 0).sum())
    value = nnz * value_bits / 8.0
    csr = value + nnz * index_bytes(cols - 1) + (rows + 1) * index_bytes(nnz)
    coo = value + nnz * (index_bytes(rows - 1) + index_bytes(cols - 1))
    return {"csr": csr, "coo": coo}


@torch.no_grad()
def layer_stats(net: nn.Module, input_shape: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Per Linear/Conv2d layer: units, params, nonzero, macs (dense and nonzero), bytes (dense, csr, coo)."""
    out_shapes = _output_sizes(net, input_shape)
    stats = {}
    for name, m in _layers(net):
        w = m.weight.detach()
        b = m.bias.detach() if m.bias is not None else None
        nnz_w = int((w != 0).sum())
        params = w.numel() + (b.numel() if b is not None else 0)
        nonzero = nnz_w + (int((b != 0).sum()) if b is not None else 0)
        if name not in out_shapes:
            raise UserError(f"layer {name!r} is not used in the forward pass; cannot count its multiply-adds")
        positions = math.prod(out_shapes[name][1:]) if isinstance(m, nn.Conv2d) else \
            math.prod(out_shapes[name][:-1])
        sb = sparse_bytes(w)
        bias_bytes = 4 * (b.numel() if b is not None else 0)
        stats[name] = {
            "type": "Conv2d" if isinstance(m, nn.Conv2d) else "Linear",
            "units": int(w.shape[0]),
            "params": params, "nonzero": nonzero,
            "macs": positions * w.numel(), "macs_nonzero": positions * nnz_w,
            "bytes_dense": 4 * params, "bytes_csr": sb["csr"] + bias_bytes, "bytes_coo": sb["coo"] + bias_bytes,
        }
    return stats


def macs(net: nn.Module, input_shape: Sequence[int], nonzero: bool = False) -> int:
    """Multiply-adds per example of the Linear/Conv2d layers (dense, or counting nonzero weights only)."""
    key = "macs_nonzero" if nonzero else "macs"
    return int(sum(s[key] for s in layer_stats(net, input_shape).values()))


def flops(net: nn.Module, input_shape: Sequence[int], nonzero: bool = False) -> int:
    """Deprecated name of :func:`macs` (it always counted multiply-adds, half the FLOPs); returns the same."""
    warnings.warn("flops() counts multiply-adds and is renamed macs(); FLOPs are 2 x MACs", DeprecationWarning,
                  stacklevel=2)
    return macs(net, input_shape, nonzero)


def posterior_scales(model: BayesianModel, guide: Any) -> dict[str, torch.Tensor]:
    """``{layer: posterior std of the weight}`` of a model's Bayesian layers (MeanFieldGuide)."""
    if not is_posterior_guide(guide):
        raise TypeError("posterior scales need a pyrocompress MeanFieldGuide")
    guide.check_belongs_to(model)
    return {n: guide.scale_of(f"{n}.weight").detach() for n, _ in model.bayes_layers()}


@torch.no_grad()
def posterior_bits(net: nn.Module, scales: Mapping[str, torch.Tensor], min_bits: int = 2,
                   max_bits: int = 32) -> dict[str, int]:
    """Bits per weight of each layer from its posterior scales (see the module docstring).

    Layers without scales keep 32 bits.
    """
    bits = {}
    for name, m in _layers(net):
        w = m.weight.detach()
        if name not in scales:
            bits[name] = 32
            continue
        s = scales[name].detach().to(w.device)
        if s.shape != w.shape:
            raise UserError(f"posterior scales of {name!r} have shape {tuple(s.shape)}, the weight {tuple(w.shape)}; "
                             "pass the scales of the same (shrunk) network")
        nz = w != 0
        if not bool(nz.any()):
            bits[name] = min_bits
            continue
        rng = float(w[nz].abs().max())
        step = float(s[nz].mean())
        b = 1 + math.ceil(math.log2(max(rng / max(step, 1e-30), 1.0)))
        bits[name] = int(min(max(b, min_bits), max_bits))
    return bits


@torch.no_grad()
def quantize_network(net: nn.Module, bits: Mapping[str, int]) -> nn.Module:
    """A copy of ``net`` whose layer weights are uniformly quantised to ``bits`` (sign + levels).

    Zeros stay zero; biases stay fp32. 32 bits or more leaves a layer as it is.
    """
    net = copy.deepcopy(net)
    for name, m in _layers(net):
        b = int(bits.get(name, 32))
        if b >= 32:
            continue
        if b < 2:
            raise UserError(f"bits of {name!r} must be >= 2, got {b}")
        w = m.weight
        rng = float(w.abs().max())
        if rng == 0:
            continue
        levels = 2 ** (b - 1) - 1
        step = rng / levels
        w.copy_(torch.round(w / step) * step)
    return net


def _device_of(net: nn.Module) -> torch.device:
    param = next(net.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def latency_of(net: nn.Module, input_shape: Sequence[int], batch_size: int = 64, repeats: int = 50,
               warmup: int = 5, seed: int = 0, device: Optional[str | torch.device] = None,
               threads: Optional[int] = None) -> dict[str, Any]:
    """Median seconds of one forward pass of a ``batch_size`` batch, and where it was measured.

    Timed with ``torch.utils.benchmark.Timer`` (``threads`` intra-op threads, default torch's
    current count; CUDA synchronised around each pass) on ``device`` (default: the
    network's). Returns ``{"seconds", "device", "threads", "batch_size", "repeats"}``.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise UserError("repeats and batch_size must be >= 1 and warmup >= 0")
    dev = torch.device(device) if device is not None else _device_of(net)
    threads = int(threads or torch.get_num_threads())
    net = copy.deepcopy(net).to(dev).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch_size,) + tuple(int(s) for s in input_shape), generator=gen).to(dev)
    timer = benchmark.Timer(stmt="net(x)", globals={"net": net, "x": x}, num_threads=threads)
    with torch.inference_mode():
        if warmup:
            timer.timeit(warmup)
        seconds = statistics.median(timer.timeit(1).median for _ in range(repeats))
    return {"seconds": seconds, "device": str(dev), "threads": threads, "batch_size": batch_size,
            "repeats": repeats}


def measure_latency(net: nn.Module, input_shape: Sequence[int], batch_size: int = 64, repeats: int = 50,
                    warmup: int = 5, seed: int = 0, device: Optional[str | torch.device] = None,
                    threads: Optional[int] = None) -> float:
    """Median seconds of one forward pass of a ``batch_size`` batch (see :func:`latency_of`)."""
    return latency_of(net, input_shape, batch_size, repeats, warmup, seed, device, threads)["seconds"]


def compression_report(net: nn.Module, input_shape: Sequence[int], reference: Optional[nn.Module] = None,
                       scales: Optional[Mapping[str, torch.Tensor]] = None, split: Any = None,
                       latency: bool = True, latency_repeats: int = 50, latency_batch: int = 64,
                       latency_device: Optional[str | torch.device] = None) -> dict[str, Any]:
    """All compression metrics of ``net`` against the dense ``reference`` (default: ``net`` itself).

    ``scales`` (posterior stds per layer of ``net``, e.g. from the shrunk guide) enable
    posterior-guided bit widths; ``split`` (a data split with ``.x``, ``.y``) adds the
    accuracy before and after that quantisation; the latency is measured on ``latency_device``
    (default: ``net``'s device), the reference's on the same device and thread count.
    """
    reference = net if reference is None else reference
    stats = layer_stats(net, input_shape)
    ref_stats = layer_stats(reference, input_shape)
    params = sum(s["params"] for s in stats.values())
    nonzero = sum(s["nonzero"] for s in stats.values())
    ref_params = sum(s["params"] for s in ref_stats.values())
    m_dense = sum(s["macs"] for s in stats.values())
    m_nz = sum(s["macs_nonzero"] for s in stats.values())
    ref_macs = sum(s["macs"] for s in ref_stats.values())
    report: dict[str, Any] = {
        "params": params, "nonzero_params": nonzero, "reference_params": ref_params,
        "compression_ratio": ref_params / max(nonzero, 1),
        "macs": m_dense, "macs_nonzero": m_nz, "reference_macs": ref_macs,
        "speedup": ref_macs / max(m_nz, 1),
        "bytes": {"dense": sum(s["bytes_dense"] for s in stats.values()),
                  "csr": sum(s["bytes_csr"] for s in stats.values()),
                  "coo": sum(s["bytes_coo"] for s in stats.values()),
                  "reference_dense": sum(s["bytes_dense"] for s in ref_stats.values())},
        "units": {n: s["units"] for n, s in stats.items()},
        "reference_units": {n: s["units"] for n, s in ref_stats.items()},
        "per_layer": stats,
    }
    if scales is not None:
        bits = posterior_bits(net, scales)
        total = 0.0
        for name, m in _layers(net):
            b = m.bias.numel() * 4 if m.bias is not None else 0
            total += sparse_bytes(m.weight, bits[name])["csr"] + b
            stats[name]["bits"] = bits[name]
        report["bits"] = bits
        report["bytes"]["bits"] = total
        report["bits_compression_ratio"] = report["bytes"]["reference_dense"] / max(total, 1.0)
        if split is not None:
            report["quantized_accuracy"] = evaluate(quantize_network(net, bits), split)["accuracy"]
    if split is not None:
        report["accuracy_check"] = evaluate(net, split)["accuracy"]
    if latency:
        small = latency_of(net, input_shape, latency_batch, latency_repeats, device=latency_device)
        t_ref = latency_of(reference, input_shape, latency_batch, latency_repeats, device=small["device"],
                           threads=small["threads"])["seconds"]
        report["latency"] = dict(small, reference_seconds=t_ref, ratio=t_ref / max(small["seconds"], 1e-12))
    return report
