"""Export of compressed (plain) networks, and loading them back without pickle.

:func:`export_network` writes, into a folder:

* ``compressed.safetensors``: the dense weights, with the JSON architecture description
  (:mod:`pyrocompress.nn.arch`) in the safetensors metadata; ``architecture.json``: the
  same description, human-readable;
* ``compressed.csr.safetensors``: the sparse export. Every Linear / Conv2d weight as CSR
  (rows = output units, columns = the flattened fan-in): 4-byte values, column indices and
  row pointers in the smallest unsigned width that holds them (1, 2 or 4 bytes), biases
  dense. Its tensor bytes are exactly ``compression_report(...)["bytes"]["csr"]``: the
  file is the compression the report claims (plus a header of about a kilobyte);
* ``compressed.csr-q.safetensors``: the same CSR with each layer's values quantised to
  its posterior-guided bit width (:func:`~pyrocompress.prune.compression.posterior_bits`,
  when a Bayesian posterior gave them): signed codes bit-packed at ``bits`` bits per value,
  the step in the metadata. It rebuilds :func:`~pyrocompress.prune.compression.quantize_network`
  exactly; its size is the report's ``bytes.bits`` (rounded up to whole bytes per layer);
* ``compressed.pt2``: a :func:`torch.export.export` ``ExportedProgram`` with a dynamic batch
  dimension (``torch.export.load(path).module()(x)`` runs it without pyrocompress);
* ``compressed.onnx`` (``onnx=True``; the ``onnx`` extra): the dynamo ONNX exporter's model,
  input ``input``, output ``logits``, dynamic batch;
* ``compressed.torchscript.pt`` (``torchscript=True``): TorchScript, which torch deprecates;
  written only while the installed torch still has ``torch.jit.script``.

:func:`load_compressed` (also ``pyrocompress.load_compressed``) rebuilds the plain
``nn.Module`` from a dense, CSR or quantised file and its description alone: no pickled
code is loaded. A network with a layer the description cannot express raises
:class:`ExportError` naming that layer.

Public API: ``export_network(net, out_dir, input_shape=None, ...) -> dict of paths``,
``load_compressed(path) -> nn.Module``, ``ExportError``, file name constants.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import tempfile
import warnings
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .._files import publish, read_json
from ..errors import UserError
from ..nn.arch import ArchitectureError, build, describe
from ..nn.layers import BayesLayer
from ..nn.model import BayesianModel
from ..runs import RunError, atomic_write_bytes, load_checkpoint, save_checkpoint, write_json
from .compression import index_bytes

__all__ = ["export_network", "load_compressed", "ExportError", "WEIGHTS_FILE", "ARCH_FILE", "SPARSE_FILE",
           "QUANTIZED_FILE", "EXPORTED_FILE", "TORCHSCRIPT_FILE", "ONNX_FILE", "KINDS", "sparse_state",
           "dense_state"]

WEIGHTS_FILE = "compressed.safetensors"
ARCH_FILE = "architecture.json"
SPARSE_FILE = "compressed.csr.safetensors"
QUANTIZED_FILE = "compressed.csr-q.safetensors"
EXPORTED_FILE = "compressed.pt2"
TORCHSCRIPT_FILE = "compressed.torchscript.pt"
ONNX_FILE = "compressed.onnx"
EXPORT_FORMAT = "pyrocompress.export/1"
SPARSE_FORMAT = "pyrocompress.export.csr/1"
#: the files :func:`load_compressed` rebuilds a network from, by kind
KINDS = {"dense": WEIGHTS_FILE, "csr": SPARSE_FILE, "quantized": QUANTIZED_FILE}
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}


class ExportError(UserError):
    """A network cannot be exported, or an export cannot be loaded."""


# ------------------------------------------------------------------ CSR
def _matrix_layers(net: nn.Module) -> list[str]:
    return [n for n, m in net.named_modules() if n and isinstance(m, (nn.Linear, nn.Conv2d))]


def _as_bytes(values: np.ndarray) -> torch.Tensor:
    """An array's little-endian bytes as a uint8 tensor (safetensors stores every width alike)."""
    return torch.from_numpy(np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"))).view(np.uint8).copy())


def _from_bytes(raw: torch.Tensor, width: int) -> np.ndarray:
    return raw.numpy().view(np.dtype(_UINT[width]).newbyteorder("<")).astype(np.int64)


def _pack(codes: np.ndarray, bits: int) -> torch.Tensor:
    """Unsigned ``codes`` (< 2**bits) packed at ``bits`` bits each, little-endian bit order."""
    planes = ((codes[:, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def _unpack(raw: torch.Tensor, bits: int, count: int) -> np.ndarray:
    planes = np.unpackbits(raw.numpy(), bitorder="little")[:count * bits].reshape(count, bits).astype(np.int64)
    return planes @ (np.int64(1) << np.arange(bits, dtype=np.int64))


def sparse_state(net: nn.Module, bits: Optional[Mapping[str, int]] = None) -> tuple[dict[str, torch.Tensor], dict]:
    """``net``'s state with every Linear / Conv2d weight as CSR (``bits``: quantised values) and its layout.

    Returns the tensors to store and the per-weight layout (shape, index widths, bits, step)
    that :func:`dense_state` needs to rebuild the dense state exactly.
    """
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, Any]] = {}
    for name in _matrix_layers(net):
        key = f"{name}.weight"
        w = state.pop(key).float()
        w2 = w.reshape(w.shape[0], -1).numpy()
        rows, cols = w2.shape
        r, c = np.nonzero(w2)
        nnz = int(r.size)
        col_w, ptr_w = index_bytes(cols - 1), index_bytes(nnz)
        row_ptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=rows), out=row_ptr[1:])
        entry: dict[str, Any] = {"shape": list(w.shape), "nnz": nnz, "col_bytes": col_w, "ptr_bytes": ptr_w}
        tensors[f"{key}.col_indices"] = _as_bytes(c.astype(_UINT[col_w]))
        tensors[f"{key}.row_ptr"] = _as_bytes(row_ptr.astype(_UINT[ptr_w]))
        values = w2[r, c]
        b = int((bits or {}).get(name, 32))
        rng = float(np.abs(w2).max()) if w2.size else 0.0
        if b < 32 and rng > 0:  # the grid of quantize_network: step = max|w| / (2**(b-1) - 1)
            levels = 2 ** (b - 1) - 1
            step = rng / levels
            q = torch.round(torch.from_numpy(values) / step).to(torch.int64).numpy()
            tensors[f"{key}.codes"] = _pack(q + levels, b)
            entry.update({"bits": b, "step": step, "levels": levels})
        else:
            tensors[f"{key}.values"] = torch.from_numpy(values.astype(np.float32))
        layout[key] = entry
    tensors.update(state)
    return tensors, layout


def dense_state(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """The dense state dict of a :func:`sparse_state` (the inverse, bit for bit)."""
    out = {k: v for k, v in tensors.items() if not any(k.startswith(w + ".") for w in layout)}
    for key, entry in layout.items():
        shape = [int(s) for s in entry["shape"]]
        rows, cols = shape[0], math.prod(shape[1:])
        nnz = int(entry["nnz"])
        c = _from_bytes(tensors[f"{key}.col_indices"], int(entry["col_bytes"]))
        ptr = _from_bytes(tensors[f"{key}.row_ptr"], int(entry["ptr_bytes"]))
        if len(c) != nnz or len(ptr) != rows + 1 or ptr[-1] != nnz:
            raise ExportError(f"the CSR of {key!r} is inconsistent (nnz {nnz}, {len(c)} column indices, "
                              f"{len(ptr)} row pointers for {rows} rows)")
        if "bits" in entry:
            q = _unpack(tensors[f"{key}.codes"], int(entry["bits"]), nnz) - int(entry["levels"])
            # the same float32 product quantize_network computed
            values = torch.from_numpy(q).to(torch.float32) * float(entry["step"])
        else:
            values = tensors[f"{key}.values"]
        w = torch.zeros(rows * cols, dtype=torch.float32)
        r = np.repeat(np.arange(rows), np.diff(ptr))
        w[torch.from_numpy(r * cols + c)] = values
        out[key] = w.reshape(shape)
    return out


# ------------------------------------------------------------------ export
@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.export / the ONNX exporter warn and log about their own internals (deprecated pytree
    helpers, torchvision ops not installed): not about this network, so not shown."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _example(input_shape: Sequence[int]) -> tuple[torch.Tensor, tuple]:
    """An example batch of 2 (a batch of 1 would be specialised) and its dynamic batch dimension."""
    x = torch.zeros((2,) + tuple(int(s) for s in input_shape))
    return x, ({0: torch.export.Dim("batch", min=1)},)


def _exported_program(net: nn.Module, input_shape: Sequence[int]) -> Any:
    x, dims = _example(input_shape)
    try:
        with _quiet_exporter():
            return torch.export.export(net, (x,), dynamic_shapes=dims)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types; one line names the failure
        raise ExportError(f"torch.export failed on this network: {type(exc).__name__}: {exc}") from None


def _write_pt2(program: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic_write_bytes(path, buf.getvalue())


def _write_onnx(program: Any, input_shape: Sequence[int], path: Path) -> None:
    missing = [m for m in ("onnx", "onnxscript") if find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs the optional packages {missing}: pip install 'pyrocompress[onnx]' "
                          "(or export without --onnx)")
    x, _ = _example(input_shape)
    try:
        with _quiet_exporter():
            onnx_program = torch.onnx.export(program, (x,), dynamo=True, verbose=False, input_names=["input"],
                                             output_names=["logits"])
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            try:
                onnx_program.save(tmp)
                publish(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; one line names the failure
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from None


def _write_torchscript(net: nn.Module, path: Path) -> None:
    if not hasattr(torch.jit, "script"):
        raise ExportError(f"torch {torch.__version__} no longer has TorchScript; use the ExportedProgram "
                          f"({EXPORTED_FILE}) or ONNX instead")
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buf)  # deprecated by torch in favour of torch.export (the .pt2)
    atomic_write_bytes(path, buf.getvalue())


def export_network(net: nn.Module, out_dir: str | Path, input_shape: Optional[Sequence[int]] = None, *,
                   exported_program: Optional[bool] = None, onnx: bool = False, torchscript: bool = False,
                   sparse: bool = True, bits: Optional[Mapping[str, int]] = None,
                   metadata: Optional[dict[str, Any]] = None) -> dict[str, Optional[str]]:
    """Write the plain network ``net`` to ``out_dir``; returns ``{format: path, or None if not written}``.

    Always the dense safetensors + ``architecture.json``; ``sparse``: the CSR file, and with
    ``bits`` (posterior-guided bit widths per layer) the quantised CSR file;
    ``exported_program`` (default: when ``input_shape`` is given) the ``.pt2``; ``onnx`` and
    ``torchscript`` on request. A requested format that cannot be written raises
    :class:`ExportError` naming why.
    """
    if isinstance(net, BayesianModel) or any(isinstance(m, BayesLayer) for m in net.modules()):
        raise ExportError("export a plain network: the shrunk .net or posterior_mean_network(model, guide)")
    try:
        desc = describe(net)
    except ArchitectureError as exc:
        raise ExportError(f"cannot export this network: {exc}") from None
    if exported_program is None:
        exported_program = input_shape is not None
    if (exported_program or onnx) and input_shape is None:
        raise ExportError("the ExportedProgram and ONNX exports need input_shape (channels, height, width)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    meta = {"format": EXPORT_FORMAT, "architecture": desc,
            "input_shape": list(input_shape) if input_shape is not None else None}
    if metadata:
        meta["info"] = metadata
    paths: dict[str, Optional[str]] = {k: None for k in ("safetensors", "architecture", "csr", "quantized", "pt2",
                                                          "onnx", "torchscript")}
    save_checkpoint(out / WEIGHTS_FILE, dict(net.state_dict()), meta)
    paths["safetensors"] = str(out / WEIGHTS_FILE)
    write_json(out / ARCH_FILE, desc)
    paths["architecture"] = str(out / ARCH_FILE)
    if sparse:
        for kind, file, layer_bits in (("csr", SPARSE_FILE, None), ("quantized", QUANTIZED_FILE, bits)):
            if kind == "quantized" and not bits:
                continue
            tensors, layout = sparse_state(net, layer_bits)
            save_checkpoint(out / file, tensors, dict(meta, format=SPARSE_FORMAT, layout=layout, kind=kind))
            paths[kind] = str(out / file)
    program = _exported_program(net, input_shape) if (exported_program or onnx) else None
    if exported_program:
        _write_pt2(program, out / EXPORTED_FILE)
        paths["pt2"] = str(out / EXPORTED_FILE)
    if onnx:
        _write_onnx(program, input_shape, out / ONNX_FILE)
        paths["onnx"] = str(out / ONNX_FILE)
    if torchscript:
        _write_torchscript(net, out / TORCHSCRIPT_FILE)
        paths["torchscript"] = str(out / TORCHSCRIPT_FILE)
    return paths


# ------------------------------------------------------------------ load
def _weights_file(path: Path, kind: Optional[str]) -> Path:
    if kind is not None and kind not in KINDS:
        raise ExportError(f"unknown export kind {kind!r}; valid kinds: {list(KINDS)}")
    if path.is_dir():
        return path / KINDS[kind or "dense"]
    return path


def load_compressed(path: str | Path, device: str | torch.device = "cpu", kind: Optional[str] = None) -> nn.Module:
    """Rebuild an exported network: a folder from :func:`export_network` (its ``kind`` file: ``dense``,
    the default, ``csr`` or ``quantized``) or one of its ``.safetensors`` files."""
    weights = _weights_file(Path(path), kind)
    if not weights.is_file():
        raise ExportError(f"{weights} does not exist; give the folder written by export_network / "
                          "`pyrocompress prune|compress --out` or one of its .safetensors files")
    try:
        tensors, meta = load_checkpoint(weights, device="cpu", finite=True)
    except RunError as exc:
        raise ExportError(str(exc)) from None
    desc = meta.get("architecture")
    if desc is None and (weights.parent / ARCH_FILE).is_file():
        desc = read_json(weights.parent / ARCH_FILE, "architecture description", ExportError)
    if desc is None:
        raise ExportError(f"{weights} carries no architecture description")
    if meta.get("format") == SPARSE_FORMAT:
        try:
            tensors = dense_state(tensors, meta.get("layout") or {})
        except KeyError as exc:
            raise ExportError(f"{weights}: the sparse export lacks the tensor {exc}") from None
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
