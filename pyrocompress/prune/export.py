"""Export of compressed (plain) networks, and loading them back without pickle.

:func:`export_network` writes, into a folder:

* ``compressed.safetensors``: the weights, with the JSON architecture description
  (:mod:`pyrocompress.nn.arch`) in the safetensors metadata;
* ``architecture.json``: the same description, human-readable;
* ``compressed.torchscript.pt``: a TorchScript module (``torch.jit.load`` runs it
  without pyrocompress);
* ``compressed.onnx``: only when the optional ``onnx`` package imports (and an input
  shape is given); otherwise skipped and reported as such.

:func:`load_compressed` (also ``pyrocompress.load_compressed``) rebuilds the plain
``nn.Module`` from the safetensors file and the description alone: no pickled code is
loaded. A network with a layer the description cannot express raises
:class:`ExportError` naming that layer.

Public API: ``export_network(net, out_dir, input_shape=None, ...) -> dict of paths``,
``load_compressed(path) -> nn.Module``, ``ExportError``, file name constants.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .._files import read_json
from ..errors import UserError
from ..nn.arch import ArchitectureError, build, describe
from ..nn.layers import BayesLayer
from ..nn.model import BayesianModel
from ..runs import RunError, atomic_write_bytes, load_checkpoint, save_checkpoint, write_json

__all__ = ["export_network", "load_compressed", "ExportError", "WEIGHTS_FILE", "ARCH_FILE", "TORCHSCRIPT_FILE",
           "ONNX_FILE"]

WEIGHTS_FILE = "compressed.safetensors"
ARCH_FILE = "architecture.json"
TORCHSCRIPT_FILE = "compressed.torchscript.pt"
ONNX_FILE = "compressed.onnx"
EXPORT_FORMAT = "pyrocompress.export/1"


class ExportError(UserError):
    """A network cannot be exported, or an export cannot be loaded."""


def export_network(net: nn.Module, out_dir: str | Path, input_shape: Optional[Sequence[int]] = None,
                   torchscript: bool = True, onnx: Optional[bool] = None,
                   metadata: Optional[dict[str, Any]] = None) -> dict[str, Optional[str]]:
    """Write the plain network ``net`` to ``out_dir``; returns ``{format: path or None if skipped}``.

    ``onnx=None`` exports ONNX when the ``onnx`` package imports and ``input_shape`` is
    given; ``onnx=True`` makes its absence an error.
    """
    if isinstance(net, BayesianModel) or any(isinstance(m, BayesLayer) for m in net.modules()):
        raise ExportError("export a plain network: the shrunk .net or posterior_mean_network(model, guide)")
    try:
        desc = describe(net)
    except ArchitectureError as exc:
        raise ExportError(f"cannot export this network: {exc}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    meta = {"format": EXPORT_FORMAT, "architecture": desc,
            "input_shape": list(input_shape) if input_shape is not None else None}
    if metadata:
        meta["info"] = metadata
    paths: dict[str, Optional[str]] = {}
    save_checkpoint(out / WEIGHTS_FILE, dict(net.state_dict()), meta)
    paths["safetensors"] = str(out / WEIGHTS_FILE)
    write_json(out / ARCH_FILE, desc)
    paths["architecture"] = str(out / ARCH_FILE)
    if torchscript:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(net)
            buf = io.BytesIO()
            torch.jit.save(scripted, buf)
        atomic_write_bytes(out / TORCHSCRIPT_FILE, buf.getvalue())
        paths["torchscript"] = str(out / TORCHSCRIPT_FILE)
    paths["onnx"] = _export_onnx(net, out, input_shape, onnx)
    return paths


def _export_onnx(net: nn.Module, out: Path, input_shape, wanted: Optional[bool]) -> Optional[str]:
    if wanted is False:
        return None
    try:
        import onnx  # noqa: F401
    except ImportError:
        if wanted:
            raise ExportError("ONNX export needs the optional 'onnx' package (pip install onnx)") from None
        return None
    if input_shape is None:
        if wanted:
            raise ExportError("ONNX export needs input_shape (channels, height, width)")
        return None
    x = torch.zeros((1,) + tuple(int(s) for s in input_shape))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), buf, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; report, never fail the export
        if wanted:
            raise ExportError(f"ONNX export failed: {exc}") from None
        warnings.warn(f"ONNX export skipped: {exc}", UserWarning, stacklevel=3)
        return None
    atomic_write_bytes(out / ONNX_FILE, buf.getvalue())
    return str(out / ONNX_FILE)


def load_compressed(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported network (a folder from :func:`export_network` or its .safetensors file)."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise ExportError(f"{weights} does not exist; give the folder written by export_network / "
                          "`pyrocompress prune|compress --out` or its compressed.safetensors file")
    try:
        tensors, meta = load_checkpoint(weights, device="cpu", finite=True)
    except RunError as exc:
        raise ExportError(str(exc)) from None
    desc = meta.get("architecture")
    if desc is None and (weights.parent / ARCH_FILE).is_file():
        desc = read_json(weights.parent / ARCH_FILE, "architecture description", ExportError)
    if desc is None:
        raise ExportError(f"{weights} carries no architecture description")
    try:
        net = build(desc)
    except ArchitectureError as exc:
        raise ExportError(f"cannot rebuild the network of {weights}: {exc}") from None
    own = net.state_dict()
    wrong = sorted(k for k in own if k not in tensors or tuple(tensors[k].shape) != tuple(own[k].shape))
    extra = sorted(set(tensors) - set(own))
    if wrong or extra:
        raise ExportError(f"{weights}: weights do not match the architecture (missing or mis-shaped {wrong[:5]}, "
                          f"unexpected {extra[:5]})")
    net.load_state_dict(tensors)
    return net.to(device).eval()
