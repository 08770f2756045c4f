"""Run directories and checkpoints: atomic writes, safe loads (no pickle).

A run directory holds ``config.json`` (what was trained and how, including the JSON
architecture description, the priors of every layer, and where the data came from with its
checksum), ``checkpoint.safetensors`` (model and guide tensors, or the deterministic
network's), ``metrics.json``, ``history.csv`` and, written last, ``COMPLETE``. While it trains
it also holds ``train_state.safetensors`` (what ``train --resume`` continues from) and the
lock ``.pyrocompress.lock``. :func:`load_run` rebuilds the model and guide from those files
alone, and refuses a run that is unfinished, corrupt, of another model, too large for the
machine, or holds non-finite parameters.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save as st_save

from ._files import (COMPLETE, LOCK_NAME, atomic_write, clear_marker, describe_holder, lock_holder, mark_complete,
                     read_complete, read_json)
from ._memory import check_memory, human_bytes
from .data import DataBundle, check_same_data, load_dataset
from .errors import RunError, UserError
from .infer.guides import is_posterior_guide, make_guide
from .nn.arch import ArchitectureError, build, describe
from .nn.layers import bayes_layers
from .nn.model import BayesianModel, bayesianize, likelihood_from_config

__all__ = [
    "RunError",
    "Run",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "write_csv",
    "save_checkpoint",
    "load_checkpoint",
    "save_run",
    "load_run",
    "bayesian_config",
    "build_bayesian",
    "run_status",
    "check_finite",
    "check_data_of",
    "CHECKPOINT",
    "TRAIN_STATE",
    "RUN_FORMAT",
]

CHECKPOINT = "checkpoint.safetensors"
#: the training state of an unfinished run (optimizer, scheduler, epoch, RNG, history): what ``--resume`` reads
TRAIN_STATE = "train_state.safetensors"
#: run directories written since runs carry a COMPLETE marker
RUN_FORMAT = "pyrocompress.run/2"
#: older run directories: complete when they hold metrics.json (written last then)
LEGACY_FORMATS = ("pyrocompress.run/1",)
#: a safetensors header larger than this is refused unread
MAX_HEADER_BYTES = 100 << 20
#: bytes per element of the safetensors dtypes
_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write a list of dicts as CSV (columns in first-seen order), atomically."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _jsonable(v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Save tensors and JSON metadata as one safetensors file, atomically."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    blob = st_save(clean, metadata={"pyrocompress": json.dumps(_jsonable(metadata))})
    atomic_write_bytes(path, blob)


def _corrupt(path: Path, why: str) -> RunError:
    return RunError(f"checkpoint {path} is corrupt or not a safetensors file ({why}); retrain or restore it")


def _check_header(path: Path, fh, size: int) -> tuple[dict, int]:
    """Read and check a safetensors header: (tensor entries, data bytes). Nothing else is read."""
    if size < 8:
        raise _corrupt(path, f"{size} bytes")
    n = int.from_bytes(fh.read(8), "little")
    if n < 2 or n > min(size - 8, MAX_HEADER_BYTES):
        raise _corrupt(path, f"its header claims {n} bytes of a {size}-byte file")
    try:
        header = json.loads(fh.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"header: {exc}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "the header is not a JSON object")
    data_bytes = size - 8 - n
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            itemsize = _ST_ITEMSIZE[entry["dtype"]]
            shape = [int(s) for s in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _corrupt(path, f"entry {name!r}: {exc!r}") from None
        numel = 1
        for s in shape:
            if s < 0:
                raise _corrupt(path, f"entry {name!r} has shape {shape}")
            numel *= s
        if not 0 <= begin <= end or end - begin != numel * itemsize:
            raise _corrupt(path, f"entry {name!r} of shape {shape} spans bytes {begin}..{end}")
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise _corrupt(path, "its tensors overlap or leave holes")
        position = end
    if position != data_bytes:
        raise _corrupt(path, f"the header describes {position} bytes of tensors, the file holds {data_bytes}: "
                             "truncated or padded")
    return header, data_bytes


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Refuse (RunError) tensors holding NaN or infinite values: a diverged or corrupt network."""
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in tensors.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())}
    if bad:
        first = sorted(bad)[:3]
        raise RunError(f"{where} holds non-finite values (NaN or infinite) in {len(bad)} tensor(s), e.g. "
                       + ", ".join(f"{k} ({bad[k]} values)" for k in first)
                       + ": the training diverged or the file was damaged; retrain (e.g. with a lower --lr)")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", *, max_bytes: Optional[int] = None,
                    finite: bool = False) -> tuple[dict, dict]:
    """Load a safetensors checkpoint: (tensors, metadata). Never unpickles anything.

    The header is read and checked first (entries, sizes, that they tile the file exactly): a
    truncated, padded or foreign file is refused before its data is read, and so are tensors
    larger than ``max_bytes`` (what the model they are for needs) or than the machine's memory.
    ``finite``: refuse NaN or infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header, data_bytes = _check_header(path, fh, size)
    if max_bytes is not None and data_bytes > max_bytes:
        raise RunError(f"checkpoint {path} holds {human_bytes(data_bytes)} of tensors, its model needs "
                       f"{human_bytes(max_bytes)}: it belongs to another model or is corrupt")
    check_memory(data_bytes, f"checkpoint {path}", "it is corrupt or meant for a larger machine")
    try:
        meta = json.loads((header.get("__metadata__") or {}).get("pyrocompress", "{}"))
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError) as exc:
        raise _corrupt(path, str(exc)) from None
    if finite:
        check_finite(tensors, f"checkpoint {path}")
    return {k: v.to(device) for k, v in tensors.items()}, meta if isinstance(meta, dict) else {}


# --------------------------------------------------------------------- models
def bayesian_config(model: BayesianModel, guide) -> dict[str, Any]:
    """What it takes to rebuild a Bayesian model and its guide: architecture, priors, guide."""
    arch = model.architecture
    if arch is None:
        raise RunError("the model has no architecture template; build it with BayesianModel.from_module")
    bayes = [n for n, _ in bayes_layers(model.net)]
    return {
        "architecture": describe(arch),
        "bayesian_layers": bayes,
        "priors": {n: layer.prior.to_config() for n, layer in bayes_layers(model.net)},
        "likelihood": model.likelihood.to_config(),
        "guide": guide.config() if is_posterior_guide(guide) else {"name": type(guide).__name__},
    }


def build_bayesian(config: dict[str, Any]) -> tuple[BayesianModel, Any]:
    """Rebuild an (untrained) Bayesian model and its guide from :func:`bayesian_config`
    (categorical or Gaussian likelihood, as it was saved)."""
    try:
        arch = build(config["architecture"])
        likelihood = likelihood_from_config(config["likelihood"])
        net = bayesianize(arch, prior=dict(config["priors"]), include=config["bayesian_layers"])
    except (KeyError, ArchitectureError, ValueError) as exc:
        raise RunError(f"cannot rebuild the model from its configuration: {exc}") from None
    model = BayesianModel(net, likelihood, architecture=arch)
    g = config.get("guide", {"name": "mean_field"})
    guide = make_guide(model, g.get("name", "mean_field"), init_scale=g.get("init_scale", 1e-3))
    return model, guide


def bayesian_state(model: BayesianModel, guide) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"guide.{k}": v for k, v in guide.state_dict().items()})
    return state


def _load_state(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, where: Path) -> None:
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise RunError(f"checkpoint {where} belongs to another model: missing {missing[:5]}, unexpected "
                       f"{unexpected[:5]}, shape mismatches {wrong[:5]}")
    module.load_state_dict(state)


def _upgrade_guide_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints written before the guides used log-scales stored ``guide.rho.<site>`` (scale =
    softplus(rho)): convert them to ``guide.log_scale.<site>``, the same posterior."""
    out = {}
    for key, value in tensors.items():
        if key.startswith("guide.rho."):
            out["guide.log_scale." + key[len("guide.rho."):]] = torch.nn.functional.softplus(value.double()).log().to(
                value.dtype)
        else:
            out[key] = value
    return out


@dataclass
class Run:
    """A loaded run: its configuration and either a Bayesian model + guide or a plain network."""

    path: Path
    config: dict[str, Any]
    model: Optional[BayesianModel] = None
    guide: Any = None
    net: Optional[nn.Module] = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.config.get("kind", "bayesian")

    @property
    def is_bayesian(self) -> bool:
        return self.kind == "bayesian"

    def load_data(self, **overrides) -> DataBundle:
        """The data set the run was trained on (same split seed), checked against the checksum the run
        recorded: from the folder it came from when that still exists, else looked up as usual."""
        spec = dict(self.config.get("data", {}))
        recorded = {k: spec.pop(k, None) for k in ("source", "sha256")}
        spec.update(overrides)
        name = spec.pop("dataset", None)
        if name is None:
            raise RunError(f"run {self.path} records no data set; pass the data explicitly")
        source = recorded["source"]
        if spec.get("data_dir") is None and source and Path(source).is_dir():
            spec["data_dir"] = source
        data = load_dataset(name, **spec)
        check_same_data(data, recorded["sha256"], f"run {self.path}", recorded["source"])
        return data


def check_data_of(run: Run, data: DataBundle) -> None:
    """Refuse (DataError) ``data`` that is not the data ``run`` was trained on (by the checksum it recorded)."""
    spec = run.config.get("data", {})
    check_same_data(data, spec.get("sha256"), f"run {run.path}", spec.get("source"))


def run_status(run_dir: str | os.PathLike) -> str:
    """``complete``, ``running`` (a living process holds its lock), ``interrupted`` (an unfinished run
    nobody writes: ``train --resume`` continues it) or ``missing`` (not a run directory)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        return "running" if lock_holder(run_dir) else "missing"
    if read_complete(run_dir) is not None:
        return "complete"
    if lock_holder(run_dir):
        return "running"
    try:
        config = read_json(cfg_path, "run configuration", RunError)
    except (RunError, OSError):
        return "interrupted"
    if config.get("format") in LEGACY_FORMATS and (run_dir / "metrics.json").is_file() and \
            not (run_dir / TRAIN_STATE).is_file():
        return "complete"
    return "interrupted"


def save_run(run_dir: str | os.PathLike, config: dict[str, Any], *, model: Optional[BayesianModel] = None,
             guide=None, net: Optional[nn.Module] = None, metrics: Optional[dict] = None,
             history: Optional[list[dict]] = None, complete: bool = True) -> Path:
    """Write a run directory: checkpoint (first), config, history, metrics; each file atomically.

    ``complete``: the run is whole; its parameters are checked (all finite) and ``COMPLETE`` is
    written last. Otherwise (a checkpoint during training) the marker is removed first, so a
    reader never takes a run in progress for a finished one.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config["format"] = RUN_FORMAT
    if model is not None:
        config["kind"] = "bayesian"
        config.update(bayesian_config(model, guide))
        tensors = bayesian_state(model, guide)
    elif net is not None:
        config["kind"] = "deterministic"
        config["architecture"] = describe(net)
        tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    else:
        raise UserError("save_run needs a Bayesian model with its guide, or a plain network")
    if complete:
        check_finite(tensors, f"the network to be saved in {run_dir}")
    else:
        clear_marker(run_dir)
    save_checkpoint(run_dir / CHECKPOINT, tensors, {"config": config})
    write_json(run_dir / "config.json", config)
    if history is not None:
        write_csv(run_dir / "history.csv", history)
    if metrics is not None:
        write_json(run_dir / "metrics.json", metrics)
    if complete:
        mark_complete(run_dir, "run", kind=config["kind"])
    return run_dir


def _state_bytes(module: nn.Module) -> int:
    return sum(v.numel() * v.element_size() for v in module.state_dict().values())


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu", *, complete: bool = True) -> Run:
    """Load a run directory written by :func:`save_run` (or ``pyrocompress train``).

    Refused with one :class:`RunError` line saying what to do: not a run, an unfinished run
    (``complete``: the default; ``train --resume`` continues it), a config.json that is not a JSON
    object, a network too large for this machine, a checkpoint that is corrupt, of another model,
    or holds NaN / infinite parameters.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory; give the folder that `pyrocompress train --out` wrote")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file() or not (run_dir / CHECKPOINT).is_file():
        if (run_dir / LOCK_NAME).exists() or (run_dir / TRAIN_STATE).exists():
            holder = lock_holder(run_dir)
            if holder:
                raise RunError(f"{run_dir} is being trained now by {describe_holder(holder)}; wait until it finishes")
            raise RunError(f"{run_dir} is an unfinished run (its training was interrupted before its first "
                           f"checkpoint); continue it with `pyrocompress train --resume --out {run_dir}` (add the options it was "
                           "started with)")
        raise RunError(f"{run_dir} is not a pyrocompress run: it needs config.json and {CHECKPOINT}")
    config = read_json(cfg_path, "run configuration", RunError)
    if config.get("format") != RUN_FORMAT and config.get("format") not in LEGACY_FORMATS:
        raise RunError(f"{run_dir} is not a pyrocompress run (config.json has format {config.get('format')!r})")
    if complete:
        status = run_status(run_dir)
        if status == "running":
            raise RunError(f"{run_dir} is being trained now by {describe_holder(lock_holder(run_dir) or {})}; "
                           "wait until it finishes")
        if status != "complete":
            raise RunError(f"{run_dir} is an unfinished run (no {COMPLETE} marker: its training was interrupted); "
                           f"continue it with `pyrocompress train --resume --out {run_dir}` (add the options it was "
                           "started with), or train it again with --overwrite")
    metrics = {}
    if (run_dir / "metrics.json").is_file():
        try:
            metrics = read_json(run_dir / "metrics.json", "run metrics", RunError)
        except RunError:
            metrics = {}
    if config.get("kind") == "deterministic":
        try:
            net = build(config["architecture"])
        except (KeyError, ArchitectureError) as exc:
            raise RunError(f"cannot rebuild the network of {run_dir}: {exc}") from None
        tensors, _ = load_checkpoint(run_dir / CHECKPOINT, max_bytes=2 * _state_bytes(net) + (1 << 20), finite=True)
        _load_state(net, tensors, "net.", run_dir / CHECKPOINT)
        return Run(run_dir, config, net=net.to(device), metrics=metrics)
    model, guide = build_bayesian(config)
    need = _state_bytes(model) + _state_bytes(guide)
    tensors, _ = load_checkpoint(run_dir / CHECKPOINT, max_bytes=2 * need + (1 << 20), finite=True)
    tensors = _upgrade_guide_state(tensors)
    _load_state(model, tensors, "model.", run_dir / CHECKPOINT)
    _load_state(guide, tensors, "guide.", run_dir / CHECKPOINT)
    return Run(run_dir, config, model=model.to(device), guide=guide.to(device), metrics=metrics)
