"""The results store of a study directory: one record per trial, written atomically.

Layout of a study directory::

    study.json            the study configuration, its hash, the format version
    plan.json             the planned trial ids (what the report counts against)
    trials/<id>.json      one record per finished trial (the source of truth; atomic)
    results.csv           tidy table, one row per trial (rewritten atomically after each trial)
    results.nc            xarray Dataset (NetCDF): metrics with dims
                          dataset x model x method x operating_point x seed (+ layer)
    runs/...              the trained networks (pyrocompress run directories)
    logs/<id>.log         per-trial (and per-training) logs

Because every trial is its own file, named by its id, a study killed at any moment and
started again loses no finished trial and duplicates none; the table and the Dataset are
views rebuilt from the trial records.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
import xarray as xr

from .._files import atomic_write, folder_entries, read_bounded, read_json
from ..errors import StoreError
from ..runs import atomic_write_bytes, write_json

__all__ = ["StoreError", "ResultsStore", "METRICS", "DIMS", "STORE_FORMAT", "trial_dataset", "read_results",
           "adopt_hash", "upgrade_row"]

STORE_FORMAT = "pyrocompress-study/1"
#: a trial record larger than this is not one (and is not read)
MAX_RECORD_BYTES = 8 << 20
#: dims of every metric variable of the results Dataset
DIMS = ("dataset", "model", "method", "operating_point", "seed")
#: numeric per-trial metrics (columns of the table, variables of the Dataset)
METRICS = (
    "accuracy", "nll", "ece", "brier", "entropy",
    "agreement", "tv_distance", "kl_to_dense",
    "ood_auroc",
    "params", "nonzero_params", "compression", "macs", "macs_nonzero", "speedup",
    "bytes_dense", "bytes_sparse", "latency_ms", "dense_latency_ms", "latency_speedup", "latency_threads",
    "dense_accuracy", "accuracy_drop",
    "epochs", "pretrain_epochs", "train_epochs", "finetune_epochs", "seconds", "train_seconds", "trial_seconds",
    "target_compression",
)
#: text columns
TEXT = ("trial_id", "dataset", "model", "method", "family", "kind", "operating_point", "recipe", "status", "error",
        "ood_set", "finished_at", "device", "latency_device")
#: columns of earlier versions under their names now ("flops" always held multiply-adds)
RENAMED = {"flops": "macs", "flops_nonzero": "macs_nonzero"}


def upgrade_row(row: dict) -> dict:
    """A trial record of any version with today's column names."""
    for old, new in RENAMED.items():
        if old in row and new not in row:
            row[new] = row.pop(old)
    return row


class ResultsStore:
    """Trial records of one study directory, bound to one configuration hash."""

    def __init__(self, study_dir: str | os.PathLike) -> None:
        self.dir = Path(study_dir)
        self.trials_dir = self.dir / "trials"

    # ----------------------------------------------------------- identity
    def open(self, config: dict, config_hash: str) -> "ResultsStore":
        """Create the store, or check that an existing one was written by this configuration."""
        meta_path = self.dir / "study.json"
        if meta_path.is_file():
            try:
                meta = read_json(meta_path, "study description", StoreError)
            except StoreError as exc:
                raise StoreError(f"{exc}; delete {self.dir} to start fresh") from None
            if meta.get("format") != STORE_FORMAT:
                raise StoreError(f"{self.dir} is not a pyrocompress study directory (format "
                                 f"{meta.get('format')!r}); choose another --out")
            if meta.get("config_hash") != config_hash:
                diff = _differences(meta.get("config", {}), config)
                raise StoreError(
                    f"{self.dir} holds results of another study configuration (hash {meta.get('config_hash')}, "
                    f"this one {config_hash}; differs in: {', '.join(diff[:6]) or 'details'}). Results of two "
                    f"configurations are never mixed: give another --out directory, or delete {self.dir} "
                    "to start fresh.")
        elif self.dir.exists() and any(p.name not in ("logs",) for p in folder_entries(self.dir)):
            raise StoreError(f"{self.dir} exists and is not an empty or pyrocompress study directory; "
                             "choose another --out")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json(meta_path, {"format": STORE_FORMAT, "config_hash": config_hash, "config": config})
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        # temporary files of atomic writes interrupted by a kill (never read; the targets are intact)
        for junk in list(self.dir.glob(".results.*.tmp")) + list(self.trials_dir.glob(".*.tmp")):
            junk.unlink(missing_ok=True)
        return self

    def meta(self) -> dict:
        path = self.dir / "study.json"
        if not path.is_file():
            raise StoreError(f"{self.dir} is not a study directory (no study.json); run `pyrocompress study --out "
                             f"{self.dir}` first")
        return read_json(path, "study description", StoreError)

    # ------------------------------------------------------------ records
    def _path(self, trial_id: str) -> Path:
        return self.trials_dir / f"{trial_id}.json"

    def record(self, row: dict) -> None:
        """Store one trial record atomically (replacing an earlier record of the same trial).

        An error record never replaces a finished one: a result, once there, is not lost.
        """
        path = self._path(row["trial_id"])
        if row.get("status") != "ok" and path.is_file():
            old = self._read(path)
            if old is not None and old.get("status") == "ok":
                return
        data = json.dumps(_jsonable(row), indent=1, sort_keys=True).encode()
        atomic_write_bytes(path, data)

    @staticmethod
    def _read(path: Path) -> Optional[dict]:
        """A trial record, or None when it is unreadable (truncated, not JSON, not a record, too large)."""
        try:
            row = json.loads(read_bounded(path, MAX_RECORD_BYTES, "trial record", StoreError).decode("utf-8"))
        except (StoreError, OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return upgrade_row(row) if isinstance(row, dict) and row.get("trial_id") == path.stem else None

    def rows(self) -> list[dict]:
        """All readable trial records, sorted by trial id (see :meth:`unreadable` for the others)."""
        if not self.trials_dir.is_dir():
            return []
        out = []
        for path in sorted(self.trials_dir.glob("*.json")):
            row = self._read(path)
            if row is not None:
                out.append(row)
        return out

    def unreadable(self) -> list[str]:
        """Trial ids whose record file cannot be read (damaged outside pyrocompress: its writes are atomic).

        Their trials count as not run: the next run of the study redoes them and replaces the file.
        """
        if not self.trials_dir.is_dir():
            return []
        return [p.stem for p in sorted(self.trials_dir.glob("*.json")) if self._read(p) is None]

    def finished(self) -> dict[str, str]:
        """``{trial_id: status}`` of the recorded trials."""
        return {r["trial_id"]: r.get("status", "ok") for r in self.rows()}

    def write_plan(self, trial_ids: list[str]) -> None:
        """Record the trials the configuration plans (``plan.json``): what the report counts against."""
        write_json(self.dir / "plan.json", {"trials": list(trial_ids)})

    def planned(self) -> Optional[list[str]]:
        """The planned trial ids (None for a study directory written before ``plan.json`` existed)."""
        path = self.dir / "plan.json"
        if not path.is_file():
            return None
        try:
            plan = json.loads(read_bounded(path, 64 * MAX_RECORD_BYTES, "study plan", StoreError).decode("utf-8"))
        except (StoreError, OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return list(plan.get("trials", [])) if isinstance(plan, dict) else None

    # -------------------------------------------------------------- views
    def table(self):
        """The tidy table (pandas DataFrame), one row per trial."""
        rows = self.rows()
        cols = list(TEXT[:8]) + ["seed"] + [m for m in METRICS] + ["status", "error", "ood_set", "device",
                                                                     "latency_device", "layers", "info", "finished_at"]
        cols = list(dict.fromkeys(cols))
        frame = pd.DataFrame([{k: (json.dumps(r.get(k)) if k in ("layers", "info") else r.get(k)) for k in cols}
                              for r in rows], columns=cols)
        return frame

    def write_table(self) -> Path:
        path = self.dir / "results.csv"
        text = self.table().to_csv(index=False)
        atomic_write_bytes(path, text.encode())
        return path

    def dataset(self):
        return trial_dataset(self.rows(), self.meta())

    def write_dataset(self) -> Path:
        path = self.dir / "results.nc"
        ds = self.dataset()
        atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
        return path


def trial_dataset(rows: Iterable[dict], meta: Optional[dict] = None):
    """Results as an xarray Dataset: every metric with dims :data:`DIMS`, ``layer_sparsity``
    with an extra ``layer`` dim, ``status`` as text; missing trials are NaN / ""."""
    rows = list(rows)
    coords: dict[str, list] = {d: [] for d in DIMS}
    targets: dict[str, float] = {}
    for r in rows:
        for d in DIMS:
            if r.get(d) not in coords[d]:
                coords[d].append(r.get(d))
        target = r.get("target_compression")  # NaN (stored as null) for automatic sizes ("auto")
        targets[r["operating_point"]] = float(target) if isinstance(target, (int, float)) else float("nan")
    cfg = (meta or {}).get("config", {})
    # order the coordinates as the configuration does
    if cfg:
        order = {"dataset": [d["name"] for d in cfg.get("datasets", [])],
                 "model": [m.get("label") or m["name"] for m in cfg.get("models", [])],
                 "method": ["dense-bayesian", "dense-deterministic"]
                 + sorted({r["method"] for r in rows if str(r.get("method", "")).startswith("dense-")}
                          - {"dense-bayesian", "dense-deterministic"})
                 + [m["name"] for m in cfg.get("methods", [])],
                 "seed": cfg.get("seeds", [])}
        for d, ordered in order.items():
            coords[d] = [x for x in ordered if x in coords[d]] + [x for x in coords[d] if x not in ordered]
    coords["operating_point"].sort(key=lambda p: (math.inf if not math.isfinite(targets.get(p, math.nan))
                                                  else targets[p], str(p)))
    layers: list[str] = []
    for r in rows:
        for name in (r.get("layers") or {}):
            if name not in layers:
                layers.append(name)
    shape = tuple(len(coords[d]) for d in DIMS)
    index = {d: {v: i for i, v in enumerate(coords[d])} for d in DIMS}
    data = {m: np.full(shape, np.nan) for m in METRICS if m != "target_compression"}
    status = np.full(shape, "", dtype=object)
    sparsity = np.full(shape + (len(layers),), np.nan)
    for r in rows:
        at = tuple(index[d][r.get(d)] for d in DIMS)
        status[at] = r.get("status", "")
        for m in data:
            v = r.get(m)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                data[m][at] = float(v)
        for j, name in enumerate(layers):
            entry = (r.get("layers") or {}).get(name)
            if entry and entry.get("params"):
                sparsity[at + (j,)] = 1.0 - entry["nonzero"] / entry["params"]
    variables = {m: (DIMS, v) for m, v in data.items()}
    variables["status"] = (DIMS, status.astype(str))
    variables["layer_sparsity"] = (DIMS + ("layer",), sparsity)
    ds = xr.Dataset(
        variables,
        coords={**{d: np.asarray(coords[d], dtype=np.int64 if d == "seed" else str) for d in DIMS},
                "layer": np.asarray(layers, dtype=str),
                "target_compression": ("operating_point", np.asarray(
                    [targets.get(p, np.nan) for p in coords["operating_point"]], dtype=float))},
        attrs={"title": f"pyrocompress study {cfg.get('name', '')}".strip(),
               "config_hash": (meta or {}).get("config_hash", ""),
               "format": STORE_FORMAT,
               "description": "one value per trial; NaN where a trial was not run or failed (see status)"},
    )
    for d in ("dataset", "model", "method", "operating_point", "layer"):
        ds[d] = ds[d].astype(str)
    return ds


def read_results(study_dir: str | os.PathLike):
    """Open ``results.nc`` of a study directory as an xarray Dataset (loaded into memory)."""
    path = Path(study_dir) / "results.nc"
    if not path.is_file():
        raise StoreError(f"{path} does not exist; run the study first")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    return ds.rename({old: new for old, new in RENAMED.items() if old in ds and new not in ds})


def adopt_hash(study_dir: str | os.PathLike, config_hash: str, config: dict,
               dropped: tuple[str, ...] = ("device",)) -> bool:
    """Re-key a study directory whose configuration is ``config`` once the keys ``dropped`` (no longer part
    of a study's identity) are left out, to ``config_hash``; returns whether it did. Trial records stay."""
    meta_path = Path(study_dir) / "study.json"
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # ResultsStore.open says what is wrong with it
    old = {k: v for k, v in (meta.get("config") or {}).items() if k not in dropped}
    same = json.dumps(old, sort_keys=True, default=str) == json.dumps(config, sort_keys=True, default=str)
    if meta.get("format") != STORE_FORMAT or meta.get("config_hash") == config_hash or not same:
        return False
    write_json(meta_path, dict(meta, config_hash=config_hash, config=config,
                               previous_config_hash=meta.get("config_hash")))
    return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new)) if isinstance(old, dict) and isinstance(new, dict) else []
    if not keys:
        return [prefix or "value"] if old != new else []
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if a != b:
            out += _differences(a, b, f"{prefix}.{k}" if prefix else str(k)) if isinstance(a, dict) and \
                isinstance(b, dict) else [f"{prefix}.{k}" if prefix else str(k)]
    return out
