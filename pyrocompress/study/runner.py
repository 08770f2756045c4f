"""Run a study: train each (data set, model, seed) once, prune it by every method at every point.

:func:`run_study` works in two phases, both through an executor (this process, local
worker processes, or Ray):

1. **training**: every (data set, model, seed) is trained once as a Bayesian network and
   once as its deterministic twin (same initial weights, stored as ``init.safetensors``),
   into ``runs/<data set>/<model>/seed<k>/<kind>`` of the study directory (a run directory
   of :mod:`pyrocompress.runs`; it appears only once complete, so a killed study retrains
   only what was unfinished);
2. **trials**: every (data set, model, seed, method, operating point) loads the trained
   network of its kind, prunes it (:mod:`pyrocompress.study.methods`) and measures it
   (:func:`measure`). The driver records each result the moment it arrives
   (:class:`~pyrocompress.study.store.ResultsStore`); finished trials are skipped when
   the study runs again, and a trial that raises is recorded with its error while the
   others go on (it is retried by the next run).

Every job is seeded from its identity (data set, model, seed, method, point), never from
the order or the worker it runs in, so any number of workers gives the same numbers.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import re
import shutil
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

from .config import DatasetSpec, MethodSpec, ModelSpec, OperatingPoint, StudyConfig
from .store import ResultsStore

__all__ = ["Trial", "StudyResult", "plan_trials", "run_study", "train_job", "trial_job", "measure", "ood_inputs",
           "run_dir_of", "check_data", "resolve_ood"]


# ------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Trial:
    """One cell of the study: a method at an operating point on one trained network."""

    dataset: DatasetSpec
    model: ModelSpec
    seed: int
    method: MethodSpec
    point: Optional[OperatingPoint]

    @property
    def point_label(self) -> str:
        if self.point is not None:
            return self.point.label
        return "1x" if self.method.family == "dense" else "auto"

    @property
    def id(self) -> str:
        return f"{self.dataset.name}__{self.model.label}__s{self.seed}__{self.method.name}__{self.point_label}"

    @property
    def target(self) -> float:
        if self.point is not None:
            return self.point.compression
        return 1.0 if self.method.family == "dense" else float("nan")


def plan_trials(cfg: StudyConfig) -> list[Trial]:
    """Every trial of the study, in a stable order (data set, model, seed, method, point)."""
    out = []
    for d in cfg.datasets:
        for m in cfg.models:
            for s in cfg.seeds:
                for method in cfg.all_methods():
                    for p in cfg.points_of(method):
                        out.append(Trial(d, m, s, method, p))
    return out


def run_dir_of(study_dir: Path, dataset: str, model: str, seed: int, kind: str) -> Path:
    return Path(study_dir) / "runs" / dataset / model / f"seed{seed}" / kind


def _seed_of(*parts: Any) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------- data
@functools.lru_cache(maxsize=4)
def _load(name: str, data_dir: Optional[str], val_fraction: float, seed: int, limit: Optional[int],
          download: bool):
    """Loaded data bundles, memoised per process (trials of one network share them; never mutated)."""
    from ..data import load_dataset

    return load_dataset(name, data_dir, val_fraction=val_fraction, seed=seed, limit=limit, download=download)


def _data_for(spec: dict, seed: int):
    return _load(spec["name"], spec.get("data_dir"), float(spec.get("val_fraction", 0.1)), int(seed),
                 spec.get("limit"), bool(spec.get("download", True)))


def resolve_ood(spec: DatasetSpec) -> str:
    """The OOD set a data set is scored against (``auto``: the other MNIST-like set when its files
    are present, else the test images rotated by 90 degrees)."""
    if spec.ood != "auto":
        return spec.ood
    from ..data import find_idx_files

    other = {"fashion-mnist": "mnist", "mnist": "fashion-mnist"}.get(spec.name)
    if other is not None and find_idx_files(other, spec.data_dir) is not None:
        return other
    return "rot90"


def ood_inputs(ood: str, bundle, spec: dict):
    """Out-of-distribution inputs, normalised like ``bundle``: ``rot90`` (test images rotated 90
    degrees), ``noise`` (standard normal images, seeded), or another IDX data set's test images."""
    import torch

    x = bundle.test.x
    if ood == "none":
        return None
    if ood == "rot90":
        return torch.rot90(x, 1, dims=(2, 3)).contiguous()
    if ood == "noise":
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    from ..data import DataError, load_dataset

    other = load_dataset(ood, spec.get("data_dir") if ood == spec["name"] else None, normalize=False,
                         download=bool(spec.get("download", True)), limit=len(bundle.test))
    if other.input_shape != bundle.input_shape:
        raise DataError(f"OOD set {ood!r} has inputs {other.input_shape}, {spec['name']!r} has "
                        f"{bundle.input_shape}; choose ood = 'rot90' or 'noise'")
    mean, std = bundle.normalization
    return (other.test.x - mean) / std


def check_data(cfg: StudyConfig) -> dict[str, str]:
    """Load every data set (and explicit OOD set) now, so missing files fail before any training.

    Returns the resolved OOD set per data set.
    """
    resolved = {}
    for d in cfg.datasets:
        bundle = _load(d.name, d.data_dir, d.val_fraction, int(cfg.seeds[0]), d.limit, d.download)
        ood = resolve_ood(d)
        if ood not in ("rot90", "noise", "none"):
            ood_inputs(ood, bundle, d.to_dict())
        resolved[d.name] = ood
    return resolved


# ------------------------------------------------------------------- logs
@contextlib.contextmanager
def _logging_to(path: Optional[str]) -> Iterator[None]:
    """Send stdout, stderr and warnings of a job to its log file."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh), \
            warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        fh.write(f"--- {datetime.now(timezone.utc).isoformat(timespec='seconds')} pid {os.getpid()}\n")
        yield


# --------------------------------------------------------------- training job
def train_job(payload: dict) -> dict:
    """Train one network (phase 1) into ``payload["run_dir"]``; returns its test metrics."""
    import torch

    from ..nn.zoo import build_model
    from ..runs import save_checkpoint
    from ..training import TrainConfig, train

    run_dir = Path(payload["run_dir"])
    with _logging_to(payload.get("log")):
        cfg = TrainConfig.from_dict(payload["train"])
        print(f"training {cfg.model} on {cfg.dataset}, seed {cfg.seed}, "
              f"{'deterministic' if cfg.deterministic else 'Bayesian'}: {json.dumps(payload['train'])}")
        data = _data_for(payload["data"], cfg.seed)
        partial = run_dir.with_name(run_dir.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        # the initial weights train() starts from (it seeds and builds the same way): lottery rewinding
        torch.manual_seed(cfg.seed)
        init = build_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_options)
        run = train(cfg, data=data, out=partial)
        save_checkpoint(partial / "init.safetensors", {k: v.detach().cpu() for k, v in init.state_dict().items()},
                        {"what": "initial weights"})
        os.replace(partial, run_dir)
        print(f"done: {json.dumps({k: run.metrics.get(k) for k in ('accuracy', 'nll', 'ece', 'epochs')})}")
        return {"accuracy": run.metrics.get("accuracy"), "seconds": run.metrics.get("seconds"),
                "epochs": run.metrics.get("epochs")}


# ----------------------------------------------------------------- measuring
def _probs(pruned, x, samples: int, seed: int, estimator: str = "local_reparam"):
    """Test-time class probabilities (posterior predictive for a Bayesian network), seeded."""
    import pyro

    from ..infer.predictive import network_probs, predictive_probs

    pyro.set_rng_seed(seed)
    if pruned.is_bayesian:
        return predictive_probs(pruned.model, pruned.guide, x, num_samples=samples, estimator=estimator)
    return network_probs(pruned.net, x)


def _dense_probs(dense, run_dir: Path, x, samples: int, seed: int, estimator: str):
    """The dense network's test probabilities, computed once per run and kept in its ``cache/``.

    Every trial of a network compares against the same dense predictive (same inputs, same
    MC seed), so the trials share one file instead of each drawing it again; a missing or
    unreadable file is recomputed.
    """
    import torch

    from ..runs import RunError, load_checkpoint, save_checkpoint

    tag = re.sub(r"[^A-Za-z0-9_.=-]+", "_", estimator)  # moment-propagation names carry ':' and ','
    path = Path(run_dir) / "cache" / f"dense_probs__{tag}__s{samples}__seed{seed}.safetensors"
    if path.is_file():
        try:
            tensors, _ = load_checkpoint(path)
            probs = tensors.get("probs")
            if probs is not None and probs.shape[0] == x.shape[0] and torch.isfinite(probs).all():
                return probs
        except RunError:
            pass
    probs = _probs(dense, x, samples, seed, estimator)
    save_checkpoint(path, {"probs": probs}, {"what": "dense test probabilities", "samples": samples,
                                             "seed": seed, "estimator": estimator})
    return probs


def _deployable(pruned):
    from ..infer.guides import posterior_mean_network

    if pruned.is_bayesian:
        return posterior_mean_network(pruned.model, pruned.guide)
    return pruned.net


def measure(pruned, dense_probs, dense_net, data, ood_x, samples: int, eval_seed: int,
            latency_repeats: int = 10, estimator: str = "local_reparam") -> dict:
    """Every metric of a pruned network against its dense network (same test inputs, same MC seed);
    ``estimator`` draws a Bayesian network's posterior predictive."""
    import torch
    from sklearn.metrics import roc_auc_score

    from ..metrics import classification_metrics
    from ..prune.compression import compression_report, layer_stats

    x, y = data.test.x, data.test.y
    probs = _probs(pruned, x, samples, eval_seed, estimator)
    out = classification_metrics(probs, y)
    p, q = probs.double(), dense_probs.double()
    eps = torch.finfo(torch.float64).tiny
    out["agreement"] = float((p.argmax(1) == q.argmax(1)).double().mean())
    out["tv_distance"] = float(0.5 * (p - q).abs().sum(1).mean())
    out["kl_to_dense"] = float((q * (q.clamp_min(eps).log() - p.clamp_min(eps).log())).sum(1).mean())
    if ood_x is not None:
        ood_probs = _probs(pruned, ood_x, samples, eval_seed + 1, estimator).double()
        ent_in = -(p * p.clamp_min(eps).log()).sum(1)
        ent_out = -(ood_probs * ood_probs.clamp_min(eps).log()).sum(1)
        labels = [0] * len(ent_in) + [1] * len(ent_out)
        out["ood_auroc"] = float(roc_auc_score(labels, torch.cat([ent_in, ent_out]).numpy()))
    net = _deployable(pruned)
    rep = compression_report(net, data.input_shape, reference=dense_net, latency=latency_repeats > 0,
                             latency_repeats=max(latency_repeats, 1))
    out.update({"params": rep["params"], "nonzero_params": rep["nonzero_params"],
                "compression": rep["compression_ratio"], "flops": rep["flops"],
                "flops_nonzero": rep["flops_nonzero"], "speedup": rep["speedup"],
                "bytes_dense": rep["bytes"]["dense"], "bytes_sparse": rep["bytes"]["csr"]})
    if "latency" in rep:
        out.update({"latency_ms": 1e3 * rep["latency"]["seconds"],
                    "dense_latency_ms": 1e3 * rep["latency"]["reference_seconds"],
                    "latency_speedup": rep["latency"]["ratio"]})
    ref = layer_stats(dense_net, data.input_shape)
    # per layer: nonzero parameters of the pruned network against the dense layer's parameters
    out["layers"] = {name: {"params": ref[name]["params"] if name in ref else s["params"], "nonzero": s["nonzero"],
                            "units": s["units"], "dense_units": ref[name]["units"] if name in ref else s["units"]}
                     for name, s in rep["per_layer"].items()}
    return out


# ----------------------------------------------------------------- trial job
def trial_job(payload: dict) -> dict:
    """Run one trial (phase 2) and return its record; never raises for the trial's own errors."""
    t_start = time.perf_counter()
    row = dict(payload["row"])
    try:
        with _logging_to(payload.get("log")):
            try:
                row.update(_trial(payload))
                row["status"] = "ok"
                row["error"] = ""
                print(f"ok: accuracy {row.get('accuracy'):.4f}, compression {row.get('compression'):.2f}x")
            except Exception as exc:  # noqa: BLE001 - recorded as the trial's outcome
                traceback.print_exc()
                row["status"] = "error"
                row["error"] = f"{type(exc).__name__}: {exc}"
    except OSError as exc:  # the log itself could not be written
        row["status"] = "error"
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["trial_seconds"] = time.perf_counter() - t_start
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return row


def _trial(payload: dict) -> dict:
    import pyro

    from ..runs import load_checkpoint, load_run
    from .methods import Pruned, TrialContext, run_method

    row = payload["row"]
    print(f"trial {row['trial_id']}: {json.dumps(payload['method'])} at {row['operating_point']}")
    data = _data_for(payload["data"], row["seed"])
    run = load_run(payload["run_dir"])
    train_cfg = dict(run.config.get("train", {}))
    dense = Pruned(model=run.model, guide=run.guide) if run.is_bayesian else Pruned(net=run.net)
    samples = int(payload["eval_samples"])
    from ..infer.predictive import resolve_eval_estimator

    estimator = resolve_eval_estimator(payload.get("eval_estimator"), train_cfg.get("estimator"))
    eval_seed = _seed_of("eval", row["dataset"], row["model"], row["seed"])
    ood_x = ood_inputs(payload["ood"], data, payload["data"]) if payload["ood"] != "none" else None
    # the dense reference, measured before the method may modify the network in place
    dense_probs = _dense_probs(dense, Path(payload["run_dir"]), data.test.x, samples, eval_seed, estimator)
    dense_net = copy.deepcopy(_deployable(dense))
    init_path = Path(payload["run_dir"]) / "init.safetensors"
    initial_state = load_checkpoint(init_path)[0] if init_path.is_file() else None
    seed = _seed_of(row["dataset"], row["model"], row["seed"], row["method"], row["operating_point"])
    pyro.set_rng_seed(seed)
    ctx = TrialContext(data=data, run=run, train=train_cfg, seed=seed, device=train_cfg.get("device", "cpu")
                       if train_cfg.get("device") not in (None, "auto") else "cpu", initial_state=initial_state,
                       grid=tuple(payload.get("grid") or ()),
                       method_seed=_seed_of(row["dataset"], row["model"], row["seed"], row["method"]),
                       cache_dir=Path(payload["run_dir"]) / "cache")
    method = payload["method"]
    t0 = time.perf_counter()
    pruned = run_method(method["family"], ctx, method["options"], payload.get("target"))
    prune_seconds = time.perf_counter() - t0
    metrics = measure(pruned, dense_probs, dense_net, data, ood_x, samples, eval_seed,
                      int(payload.get("latency_repeats", 10)), estimator)
    dense_acc = float((dense_probs.argmax(1) == data.test.y).double().mean())
    train_epochs = int(run.metrics.get("epochs", train_cfg.get("epochs", 0)))
    train_seconds = float(run.metrics.get("train_seconds", run.metrics.get("seconds", 0.0)))
    if pruned.retrain_epochs:  # methods that train from scratch replace the dense training
        train_epochs, train_seconds = pruned.retrain_epochs, 0.0
    metrics.update({
        "dense_accuracy": dense_acc,
        "accuracy_drop": dense_acc - metrics["accuracy"],
        "train_epochs": train_epochs,
        "finetune_epochs": int(pruned.finetune_epochs),
        "epochs": train_epochs + int(pruned.finetune_epochs),
        "train_seconds": train_seconds,
        "seconds": train_seconds + prune_seconds,
        "info": pruned.info,
    })
    return metrics


def _queue_priority(payload: dict) -> int:
    """Queue order (stable sort): the deepest point of a shared lottery trajectory first, its
    other points last (they then find their rounds cached instead of waiting for them)."""
    options = payload["method"].get("options", {})
    if payload["method"].get("family") == "lottery" and options.get("schedule") == "trajectory":
        grid = payload.get("grid") or []
        return 0 if grid and payload.get("target") == max(grid) else 2
    return 1


# ------------------------------------------------------------------- driver
@dataclass
class StudyResult:
    """What a call of :func:`run_study` did."""

    path: Path
    total: int
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return (f"{self.total} trials: {self.ran} run now, {self.skipped} already done, {len(self.failed)} failed "
                f"({self.seconds:.0f} s); results in {self.path}")


def _row_base(trial: Trial, cfg: StudyConfig, kind: str, ood: str, config_hash: str) -> dict:
    return {"trial_id": trial.id, "dataset": trial.dataset.name, "model": trial.model.label, "seed": trial.seed,
            "method": trial.method.name, "family": trial.method.family, "kind": kind,
            "operating_point": trial.point_label, "target_compression": trial.target, "ood_set": ood,
            "config_hash": config_hash}


def run_study(cfg: StudyConfig, out: str | os.PathLike, *, workers: int = 1, executor: str = "local",
              address: Optional[str] = None, threads: int = 1, progress: bool = True,
              retry_failed: bool = True, max_trials: Optional[int] = None) -> StudyResult:
    """Run (or resume) a study into the directory ``out``; returns what was done.

    ``max_trials`` stops after that many trials have been run now (the rest wait for the
    next call; a way to spread a large study over sessions).
    """
    from tqdm.auto import tqdm

    from .executors import make_executor

    t0 = time.perf_counter()
    study_dir = Path(out)
    # 1. everything that can be wrong with the input fails before any training
    ood = check_data(cfg)
    config_hash = cfg.config_hash()
    store = ResultsStore(study_dir).open(cfg.to_dict(), config_hash)
    trials = plan_trials(cfg)
    done = store.finished()
    todo = [t for t in trials if done.get(t.id) != "ok" and (retry_failed or t.id not in done)]
    result = StudyResult(study_dir, len(trials), skipped=len(trials) - len(todo))
    if max_trials is not None:
        todo = todo[:max_trials]
    # 2. the trained networks these trials need
    needed: dict[Path, dict] = {}
    for t in todo:
        kind = t.method.kind
        path = run_dir_of(study_dir, t.dataset.name, t.model.label, t.seed, kind)
        if path.is_dir() or path in needed:
            continue
        needed[path] = {"run_dir": str(path), "train": cfg.train_config(t.dataset, t.model, t.seed, kind),
                        "data": t.dataset.to_dict(),
                        "log": str(study_dir / "logs" / f"train__{t.dataset.name}__{t.model.label}__s{t.seed}__"
                                                        f"{kind}.log")}
    bar = tqdm(total=len(needed) + len(todo), desc=f"study {cfg.name}", unit="job", disable=not progress,
               dynamic_ncols=True, smoothing=0.05)
    train_failed: dict[str, str] = {}
    last_nc = 0.0
    try:
        with make_executor(executor, workers, address, threads) as ex:
            for payload, res, exc in ex.map_unordered(train_job, list(needed.values())):
                bar.update(1)
                if exc is not None:
                    train_failed[payload["run_dir"]] = f"training failed: {type(exc).__name__}: {exc}"
                    bar.write(f"training failed for {payload['run_dir']}: {exc} (log: {payload['log']})")
            payloads = []
            for t in todo:
                kind = t.method.kind
                path = run_dir_of(study_dir, t.dataset.name, t.model.label, t.seed, kind)
                payloads.append({
                    "row": _row_base(t, cfg, kind, ood[t.dataset.name], config_hash),
                    "run_dir": str(path), "data": t.dataset.to_dict(), "ood": ood[t.dataset.name],
                    "method": t.method.to_dict(), "target": t.point.compression if t.point else None,
                    "eval_samples": cfg.eval_samples, "eval_estimator": cfg.eval_estimator,
                    "latency_repeats": cfg.latency_repeats,
                    "grid": [p.compression for p in cfg.points_of(t.method) if p is not None],
                    "log": str(study_dir / "logs" / f"{t.id}.log")})
            payloads.sort(key=_queue_priority)
            runnable = []
            for p in payloads:
                if p["run_dir"] in train_failed:
                    row = dict(p["row"], status="error", error=train_failed[p["run_dir"]])
                    store.record(row)
                    result.failed.append(row["trial_id"])
                    bar.update(1)
                else:
                    runnable.append(p)
            for payload, row, exc in ex.map_unordered(trial_job, runnable):
                if exc is not None:  # the worker itself died
                    row = dict(payload["row"], status="error", error=f"worker failed: {type(exc).__name__}: {exc}")
                store.record(row)
                store.write_table()
                if time.monotonic() - last_nc > 10.0:
                    store.write_dataset()
                    last_nc = time.monotonic()
                result.ran += 1
                if row.get("status") != "ok":
                    result.failed.append(row["trial_id"])
                    bar.write(f"trial {row['trial_id']} failed: {row.get('error')} (log: {payload['log']})")
                bar.update(1)
                bar.set_postfix_str(f"{row['method']} {row['operating_point']} "
                                    f"acc={row.get('accuracy') or float('nan'):.3f}"
                                    + (f" failed={len(result.failed)}" if result.failed else ""), refresh=False)
    finally:
        bar.close()
        if store.rows():
            store.write_table()
            store.write_dataset()
    result.seconds = time.perf_counter() - t0
    return result
