"""The two jobs of a study, run by an executor in any process: train a network, run one trial.

A job is a top-level function of a picklable payload; it writes its stdout, stderr and
warnings to its own log. :func:`train_job` trains one network into its run directory (which
appears only once complete) and stores the initial weights beside it (lottery rewinding);
:func:`trial_job` loads the trained network of its method's recipe, prunes it with the
method (built once, when the configuration was read) and measures the result; it never
raises for the trial's own errors, which it records.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import shutil
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

import pyro
import torch

from ..data import DataBundle, load_dataset, ood_inputs
from ..errors import LockedError, OutputError, RunError
from ..infer.fit import resolve_device
from ..infer.predictive import resolve_eval_estimator
from ..nn.zoo import build_model
from ..prune.methods import Context, FitOptions, Pruned
from ..prune.methods.context import INIT_FILE
from ..runs import check_data_of, load_run, save_checkpoint
from ..training import TrainConfig, train
from .measure import dense_probs, measure
from .plan import seed_of

__all__ = ["train_job", "trial_job", "data_for"]


@functools.lru_cache(maxsize=4)
def _load(name: str, data_dir: Optional[str], val_fraction: float, seed: int, limit: Optional[int],
          download: bool) -> DataBundle:
    """Loaded data bundles, memoised per process (trials of one network share them; never mutated)."""
    return load_dataset(name, data_dir, val_fraction=val_fraction, seed=seed, limit=limit, download=download)


def data_for(spec: dict, seed: int) -> DataBundle:
    """The data set of a ``DatasetSpec.to_dict()``, split with ``seed``."""
    return _load(spec["name"], spec.get("data_dir"), float(spec.get("val_fraction", 0.1)), int(seed),
                 spec.get("limit"), bool(spec.get("download", True)))


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


def train_job(payload: dict) -> dict:
    """Train one network (phase 1) into ``payload["run_dir"]``; returns its test metrics."""
    run_dir = Path(payload["run_dir"])
    with _logging_to(payload.get("log")):
        cfg = TrainConfig.from_dict(payload["train"])
        print(f"training {cfg.model} on {cfg.dataset}, seed {cfg.seed}, "
              f"{'deterministic' if cfg.deterministic else 'Bayesian'}: {json.dumps(payload['train'])}")
        data = data_for(payload["data"], cfg.seed)
        partial = run_dir.with_name(run_dir.name + ".partial")
        # the initial weights train() starts from (it seeds and builds the same way): lottery rewinding
        torch.manual_seed(cfg.seed)
        init = build_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_options)
        try:  # a training a killed study left halfway continues after its last finished epoch
            run = train(cfg, data=data, out=partial, resume=True)
        except (RunError, OutputError) as exc:
            if isinstance(exc, LockedError) or not partial.exists():
                raise
            print(f"cannot resume {partial} ({exc}); training it from the start")
            shutil.rmtree(partial)
            run = train(cfg, data=data, out=partial)
        save_checkpoint(partial / INIT_FILE, {k: v.detach().cpu() for k, v in init.state_dict().items()},
                        {"what": "initial weights"})
        os.replace(partial, run_dir)
        print(f"done: {json.dumps({k: run.metrics.get(k) for k in ('accuracy', 'nll', 'ece', 'epochs')})}")
        return {"accuracy": run.metrics.get("accuracy"), "seconds": run.metrics.get("seconds"),
                "epochs": run.metrics.get("epochs")}


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
    row = payload["row"]
    method = payload["method"]
    print(f"trial {row['trial_id']}: {method!r} at {row['operating_point']}")
    data = data_for(payload["data"], row["seed"])
    # the study's device now (a study may resume on another device than the one it started on)
    device = resolve_device(payload.get("device") or "cpu")
    run = load_run(payload["run_dir"], device=device)
    check_data_of(run, data)
    train_cfg = dict(run.config.get("train", {}))
    dense = Pruned(model=run.model, guide=run.guide) if run.is_bayesian else Pruned(net=run.net)
    samples = int(payload["eval_samples"])
    estimator = resolve_eval_estimator(payload.get("eval_estimator"), train_cfg.get("estimator"))
    eval_seed = seed_of("eval", row["dataset"], row["model"], row["seed"])
    ood_x = ood_inputs(payload["ood"], data, bool(payload["data"].get("download", True)))
    # the dense reference, measured before the method runs
    reference_probs = dense_probs(dense, Path(payload["run_dir"]), data.test.x, samples, eval_seed, estimator)
    dense_net = copy.deepcopy(dense.deployable())
    seed = seed_of(row["dataset"], row["model"], row["seed"], row["method"], row["operating_point"])
    pyro.set_rng_seed(seed)
    ctx = Context(run=run, data=data, fit=FitOptions.of(train_cfg, device=str(device)), seed=seed,
                  eval_samples=samples,
                  method_seed=seed_of(row["dataset"], row["model"], row["seed"], row["method"]),
                  grid=tuple(payload.get("grid") or ()), cache_dir=Path(payload["run_dir"]) / "cache")
    target = payload.get("target")
    t0 = time.perf_counter()
    pruned = method.run(ctx, target if target is not None else method.default_target())
    prune_seconds = time.perf_counter() - t0
    metrics = measure(pruned, reference_probs, dense_net, data, ood_x, samples, eval_seed,
                      int(payload.get("latency_repeats", 10)), estimator)
    dense_acc = float((reference_probs.argmax(1) == data.test.y).double().mean())
    train_seconds = float(run.metrics.get("train_seconds", run.metrics.get("seconds", 0.0)))
    if pruned.train_epochs is not None:  # a method that trains from scratch replaces the dense training
        train_seconds = 0.0
    metrics.update({
        "dense_accuracy": dense_acc,
        "accuracy_drop": dense_acc - metrics["accuracy"],
        **pruned.epochs(run),
        "train_seconds": train_seconds,
        "seconds": train_seconds + prune_seconds,
        "device": str(device),
        "info": pruned.info,
    })
    return metrics
