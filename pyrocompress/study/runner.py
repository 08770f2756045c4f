"""Run a study: train each network once, prune it by every method at every point, record every trial.

:func:`run_study` works in two phases, both through an executor (this process, local
worker processes, or Ray):

1. **training**: every trained network the trials need (:func:`~pyrocompress.study.plan.networks_of`:
   each (data set, model, seed) as a Bayesian network and as its deterministic twin, with the
   same initial weights, plus each method's own training recipe) is trained once into its run
   directory (:mod:`pyrocompress.runs`; it appears only once complete, so a killed study
   retrains only what was unfinished); recipes that start from the twin (``init_from``) are
   trained after it;
2. **trials**: every (data set, model, seed, method, operating point) loads the trained
   network of its method's recipe, prunes it and measures it (:mod:`.jobs`). The driver
   records each result the moment it arrives (:class:`~pyrocompress.study.store.ResultsStore`);
   finished trials are skipped when the study runs again, and a trial that raises is recorded
   with its error while the others go on (it is retried by the next run).

Every job is seeded from its identity (data set, model, seed, method, point), never from
the order or the worker it runs in, so any number of workers gives the same numbers.

One driver at a time works in a study directory: it holds the directory's lock
(``.pyrocompress.lock``, naming it) from start to end, so a second ``pyrocompress study`` on
the same ``--out`` is refused at once instead of writing over the first one's records.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from .._files import FolderLock, check_output_path, remove_temporaries
from ..data import ood_inputs, resolve_ood
from ..errors import UserError
from ..prune.targets import Compression
from .executors import RayExecutor, check_gpus, make_executor
from .jobs import data_for, train_job, trial_job
from .plan import Network, Trial, networks_of, plan_trials
from .specs import StudyConfig
from .store import ResultsStore, adopt_hash

__all__ = ["StudyResult", "run_study", "check_data", "plan_trials"]


def check_data(cfg: StudyConfig) -> dict[str, str]:
    """Load every data set (and explicit OOD set) now, so missing files fail before any training.

    Returns the resolved OOD set per data set.
    """
    resolved = {}
    for d in cfg.datasets:
        bundle = data_for(d.to_dict(), int(cfg.seeds[0]))
        ood = resolve_ood(d.name, d.ood, d.data_dir)
        if ood not in ("rot90", "noise", "none"):
            ood_inputs(ood, bundle, d.download)
        resolved[d.name] = ood
    return resolved


def _queue_priority(payload: dict) -> int:
    """Queue order (stable sort): the deepest point of a shared lottery trajectory first, its
    other points last (they then find their rounds cached instead of waiting for them)."""
    method = payload["method"]
    if method.name == "lottery" and method.options.schedule.value == "trajectory":
        grid = payload.get("grid") or []
        target = payload.get("target")
        return 0 if grid and target is not None and target.ratio == max(grid) else 2
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


def _device_plan(device: str, gpus_per_trial: Optional[float]) -> float:
    """GPUs per Ray job: ``gpus_per_trial`` (default 1) on a CUDA device, none on the CPU."""
    cuda = device.startswith("cuda")
    if gpus_per_trial is None:
        return 1.0 if cuda else 0.0
    gpus = check_gpus(gpus_per_trial)
    if gpus > 0 and not cuda:
        raise UserError(f"--gpus-per-trial {gpus:g} needs the study's device to be cuda (it is {device!r}); "
                         "give --device cuda or leave --gpus-per-trial out")
    if cuda and gpus == 0:
        raise UserError("a study on cuda needs --gpus-per-trial > 0 (fractions share a GPU, e.g. 0.25)")
    return gpus


def _row_base(trial: Trial, ood: str, config_hash: str) -> dict:
    return {"trial_id": trial.id, "dataset": trial.dataset.name, "model": trial.model.label, "seed": trial.seed,
            "method": trial.method.name, "family": trial.method.family, "kind": trial.method.kind,
            "recipe": trial.method.recipe.label, "operating_point": trial.point_label,
            "target_compression": trial.target, "ood_set": ood, "config_hash": config_hash}


def _train_payload(net: Network, cfg: StudyConfig, study_dir: Path) -> dict:
    train = cfg.train_config(net.dataset, net.model, net.seed, net.recipe)
    if net.recipe.init_from:
        train["init_from"] = str(net.twin().run_dir(study_dir))
    return {"run_dir": str(net.run_dir(study_dir)), "train": train, "data": net.dataset.to_dict(),
            "log": str(study_dir / "logs" / f"train__{net.name}.log")}


def run_study(cfg: StudyConfig, out: str | os.PathLike, *, workers: int = 1, executor: str = "local",
              address: Optional[str] = None, threads: int = 1, progress: bool = True,
              retry_failed: bool = True, max_trials: Optional[int] = None, gpus_per_trial: Optional[float] = None,
              connect_timeout: float = 5.0) -> StudyResult:
    """Run (or resume) a study into the directory ``out``; returns what was done.

    ``max_trials`` stops after that many trials have been run now (the rest wait for the
    next call; a way to spread a large study over sessions). ``out`` is resolved once, to an
    absolute path, and every job is given that path: on a Ray cluster every node must see it
    (checked before any job runs). ``gpus_per_trial`` (Ray; default 1 when the study's device
    is CUDA, else none) may be a fraction; ``connect_timeout`` bounds the wait for the cluster.
    """
    t0 = time.perf_counter()
    for name, value in (("workers", workers), ("threads", threads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    if max_trials is not None and (not isinstance(max_trials, int) or isinstance(max_trials, bool) or max_trials < 1):
        raise UserError(f"max_trials must be a positive integer (or None: all), got {max_trials!r}")
    study_dir = check_output_path(Path(out).expanduser()).resolve()
    if executor != "ray" and gpus_per_trial is not None:
        raise UserError("--gpus-per-trial is for --executor ray (the local executor runs every job on the study's "
                        "device)")
    gpus = _device_plan(cfg.device, gpus_per_trial) if executor == "ray" else 0.0
    # 1. everything that can be wrong with the input fails before any training
    ood = check_data(cfg)
    config_hash = cfg.config_hash()
    with FolderLock(study_dir, "study"):
        # a study started before the device left the configuration's identity resumes under the new hash
        adopt_hash(study_dir, config_hash, cfg.to_dict())
        return _run_locked(cfg, study_dir, ood, config_hash, t0, workers=workers, executor=executor, address=address,
                           threads=threads, progress=progress, retry_failed=retry_failed, max_trials=max_trials,
                           gpus=gpus, connect_timeout=connect_timeout)


def _clean_partial(study_dir: Path) -> None:
    """Remove what a killed driver left: networks trained halfway (``*.partial``; a train job resumes from its
    own state when it is still there, see :func:`~pyrocompress.study.jobs.train_job`) are kept, other junk goes."""
    runs = study_dir / "runs"
    if not runs.is_dir():
        return
    for partial in runs.rglob("*.partial"):
        done = partial.with_name(partial.name[:-len(".partial")])
        if done.is_dir():  # trained and published; the partial is a leftover
            shutil.rmtree(partial, ignore_errors=True)


def _run_locked(cfg: StudyConfig, study_dir: Path, ood: dict, config_hash: str, t0: float, *, workers: int,
                executor: str, address: Optional[str], threads: int, progress: bool, retry_failed: bool,
                max_trials: Optional[int], gpus: float, connect_timeout: float) -> StudyResult:
    store = ResultsStore(study_dir).open(cfg.to_dict(), config_hash)
    _clean_partial(study_dir)
    remove_temporaries(study_dir)
    trials = plan_trials(cfg)
    store.write_plan([t.id for t in trials])
    done = store.finished()
    todo = [t for t in trials if done.get(t.id) != "ok" and (retry_failed or t.id not in done)]
    result = StudyResult(study_dir, len(trials), skipped=len(trials) - len(todo))
    if max_trials is not None:
        todo = todo[:max_trials]
    # 2. the trained networks these trials need (twins before the recipes that start from them)
    needed = [n for n in networks_of(todo) if not n.run_dir(study_dir).is_dir()]
    phases = [[_train_payload(n, cfg, study_dir) for n in needed if bool(n.recipe.init_from) == later]
              for later in (False, True)]
    bar = tqdm(total=len(needed) + len(todo), desc=f"study {cfg.name}", unit="job", disable=not progress,
               dynamic_ncols=True, smoothing=0.05)
    train_failed: dict[str, str] = {}
    last_nc = 0.0
    try:
        with make_executor(executor, workers, address, threads, gpus, connect_timeout) as ex:
            if isinstance(ex, RayExecutor) and not ex.is_local:
                ex.check_folder(study_dir)
            for phase in phases:
                for p in phase:  # a recipe whose deterministic twin failed cannot start from it
                    if p["train"].get("init_from") in train_failed:
                        train_failed[p["run_dir"]] = f"training failed: its twin {p['train']['init_from']} failed"
                phase = [p for p in phase if p["run_dir"] not in train_failed]
                for payload, res, exc in ex.map_unordered(train_job, phase):
                    bar.update(1)
                    if exc is not None:
                        train_failed[payload["run_dir"]] = f"training failed: {type(exc).__name__}: {exc}"
                        bar.write(f"training failed for {payload['run_dir']}: {exc} (log: {payload['log']})")
            payloads = []
            for t in todo:
                payloads.append({
                    "row": _row_base(t, ood[t.dataset.name], config_hash),
                    "run_dir": str(t.network.run_dir(study_dir)), "data": t.dataset.to_dict(),
                    "ood": ood[t.dataset.name], "method": t.method.method, "device": cfg.device,
                    "target": Compression(t.point.compression) if t.point else None,
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
