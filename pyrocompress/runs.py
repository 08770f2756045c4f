"""Run directories and checkpoints: atomic writes, safe loads (no pickle).

A run directory holds ``config.json`` (what was trained and how, including the JSON
architecture description and the priors of every layer), ``checkpoint.safetensors``
(model and guide tensors, or the deterministic network's), ``metrics.json`` and
``history.csv``. :func:`load_run` rebuilds the model and guide from those files alone.
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
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ._files import atomic_write
from .data import DataBundle, load_dataset
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
    "CHECKPOINT",
]

CHECKPOINT = "checkpoint.safetensors"
RUN_FORMAT = "pyrocompress.run/1"


class RunError(ValueError):
    """A run directory or checkpoint is missing, corrupt, or of another model."""


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


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Load a safetensors checkpoint: (tensors, metadata). Never unpickles anything."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    raw = path.read_bytes()
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("pyrocompress", "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"checkpoint {path} is corrupt or not a safetensors file ({exc}); retrain or restore it") from None
    return {k: v.to(device) for k, v in tensors.items()}, meta


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
        """The data set the run was trained on (same split seed)."""
        spec = dict(self.config.get("data", {}))
        spec.update(overrides)
        name = spec.pop("dataset", None)
        if name is None:
            raise RunError(f"run {self.path} records no data set; pass the data explicitly")
        return load_dataset(name, **spec)


def save_run(run_dir: str | os.PathLike, config: dict[str, Any], *, model: Optional[BayesianModel] = None,
             guide=None, net: Optional[nn.Module] = None, metrics: Optional[dict] = None,
             history: Optional[list[dict]] = None) -> Path:
    """Write a run directory: checkpoint (first), config, history, metrics; each file atomically."""
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
        raise ValueError("save_run needs a Bayesian model with its guide, or a plain network")
    save_checkpoint(run_dir / CHECKPOINT, tensors, {"config": config})
    write_json(run_dir / "config.json", config)
    if history is not None:
        write_csv(run_dir / "history.csv", history)
    if metrics is not None:
        write_json(run_dir / "metrics.json", metrics)
    return run_dir


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Load a run directory written by :func:`save_run` (or ``pyrocompress train``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory; give the folder that `pyrocompress train --out` wrote")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file() or not (run_dir / CHECKPOINT).is_file():
        raise RunError(f"{run_dir} is not a pyrocompress run: it needs config.json and {CHECKPOINT}")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{cfg_path} is not valid JSON ({exc})") from None
    if config.get("format") != RUN_FORMAT:
        raise RunError(f"{run_dir} is not a pyrocompress run (config.json has format {config.get('format')!r})")
    tensors, _ = load_checkpoint(run_dir / CHECKPOINT)
    metrics = {}
    if (run_dir / "metrics.json").is_file():
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except json.JSONDecodeError:
            metrics = {}
    if config.get("kind") == "deterministic":
        try:
            net = build(config["architecture"])
        except (KeyError, ArchitectureError) as exc:
            raise RunError(f"cannot rebuild the network of {run_dir}: {exc}") from None
        _load_state(net, tensors, "net.", run_dir / CHECKPOINT)
        return Run(run_dir, config, net=net.to(device), metrics=metrics)
    model, guide = build_bayesian(config)
    tensors = _upgrade_guide_state(tensors)
    _load_state(model, tensors, "model.", run_dir / CHECKPOINT)
    _load_state(guide, tensors, "guide.", run_dir / CHECKPOINT)
    return Run(run_dir, config, model=model.to(device), guide=guide.to(device), metrics=metrics)
