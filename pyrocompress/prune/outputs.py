"""What ``pyrocompress prune`` / ``compress`` write: the history of a method's stages, metrics and the export.

:class:`HistoryRecorder` is the command line's :class:`~pyrocompress.prune.methods.Progress`:
every stage a method reports is evaluated on the validation split (posterior predictive for a
Bayesian network, seeded) and becomes a row of ``history.csv``. :func:`write_outputs`
physically shrinks a masked result, evaluates it against the run's dense network on the test
split, and writes ``metrics.json``, ``history.csv``, the export (dense safetensors + JSON
architecture, CSR and posterior-quantised CSR, ExportedProgram ``.pt2``; ONNX and TorchScript
on request), the method's artifacts (``masks.safetensors``,
``lottery.safetensors``) and, for a Bayesian result, ``bayesian/`` (a run directory); then,
last, ``COMPLETE``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .._files import mark_complete
from ..data import DataBundle, Split
from ..infer.guides import posterior_mean_network
from ..infer.predictive import evaluate
from ..metrics import parameter_counts
from ..runs import Run, check_finite, save_checkpoint, save_run, write_csv, write_json
from .compression import compression_report, posterior_scales
from .export import export_network
from .methods import Progress, Pruned
from .shrink import shrink, unit_sizes
from .targets import AutoThreshold, Compression, Sparsity, Target, Threshold

__all__ = ["HistoryRecorder", "OutputOptions", "write_outputs", "bayes_eval", "print_summary"]


def bayes_eval(model, guide, split: Split, samples: int, seed: int, estimator: str) -> dict[str, float]:
    """Posterior-predictive metrics on ``split`` with a fixed seed (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return evaluate(model, split, guide, num_samples=samples, estimator=estimator)


class HistoryRecorder(Progress):
    """Evaluates every stage a method reports on ``split`` and keeps the rows of ``history.csv``."""

    def __init__(self, split: Split, samples: int, seed: int, estimator: str) -> None:
        self.split, self.samples, self.seed, self.estimator = split, samples, seed, estimator
        self.history: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()

    def stage(self, name: str, *, net: Optional[nn.Module] = None, model: Any = None, guide: Any = None,
              masks: Any = None) -> None:
        seconds = 0.0 if not self.history else time.perf_counter() - self._t0
        if model is not None:
            if masks is not None:
                small = shrink(model, guide, masks=masks, warn=False)
                model, guide = small.model, small.guide
            m = bayes_eval(model, guide, self.split, self.samples, self.seed, self.estimator)
            counts, units = parameter_counts(model, guide)["total"], unit_sizes(model)
        else:
            if masks is not None:
                net = shrink(net, masks=masks, warn=False).net
            m = evaluate(net, self.split)
            counts, units = parameter_counts(net)["total"], unit_sizes(net)
        row: dict[str, Any] = {"stage": name}
        row.update({f"units_{k}": v for k, v in units.items()})
        row.update({"params": counts["params"], "nonzero_params": counts["nonzero"], "val_accuracy": m["accuracy"],
                    "val_nll": m["nll"], "val_ece": m["ece"], "seconds": seconds})
        self.history.append(row)
        self._t0 = time.perf_counter()

    def rows(self, rows: list[dict]) -> None:
        self.history.extend(rows)


@dataclass(frozen=True)
class OutputOptions:
    """How the command line measures and exports a pruned network: predictive draws and estimator, latency,
    seed, and the export formats written besides the dense and sparse safetensors files."""

    eval_samples: int = 32
    eval_estimator: str = "local_reparam"
    latency: bool = True
    latency_repeats: int = 50
    seed: int = 0
    exported_program: bool = True
    onnx: bool = False
    torchscript: bool = False


def _target_info(target: Optional[Target]) -> dict[str, Any]:
    return {"sparsity_target": target.value if isinstance(target, Sparsity) else None,
            "compression_target": target.ratio if isinstance(target, Compression) else None,
            "threshold": target.value if isinstance(target, Threshold) else None,
            "auto_threshold": isinstance(target, AutoThreshold)}


def write_outputs(out: str | Path, run: Run, data: DataBundle, pruned: Pruned, history: list[dict],
                  target: Optional[Target], opts: OutputOptions) -> dict[str, Any]:
    """Shrink a masked result, evaluate it against the run's dense network, write metrics, history, export."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {k: v for k, v in pruned.info.items() if k != "history"}
    model, guide, net = pruned.model, pruned.guide, pruned.net
    if pruned.masks is not None:
        small = shrink(model if model is not None else net, guide, masks=pruned.masks)
        model, guide, net = small.model, small.guide, small.net
        info["units_change"] = small.plan.summary()
    if model is not None:
        net = posterior_mean_network(model, guide)
    dense = posterior_mean_network(run.model, run.guide) if run.is_bayesian else run.net
    net, dense = net.cpu().eval(), dense.cpu().eval()
    check_finite(dict(net.state_dict()), "the pruned network")
    if model is not None:
        metrics = bayes_eval(model, guide, data.test, opts.eval_samples, opts.seed, opts.eval_estimator)
        metrics.update({f"mean_{k}": v for k, v in evaluate(net, data.test).items()})
        scales = {k: v.cpu() for k, v in posterior_scales(model, guide).items()}
        dense_metrics = bayes_eval(run.model, run.guide, data.test, opts.eval_samples, opts.seed,
                                   opts.eval_estimator)
        metrics["eval_estimator"] = opts.eval_estimator
    else:
        metrics = evaluate(net, data.test)
        scales = None
        dense_metrics = evaluate(dense, data.test)
    report = compression_report(net, data.input_shape, reference=dense, scales=scales, split=data.test,
                                latency=opts.latency, latency_repeats=opts.latency_repeats)
    metrics.update({k: report[k] for k in ("params", "nonzero_params", "compression_ratio", "macs", "macs_nonzero",
                                           "speedup", "bytes", "units", "reference_units", "reference_params",
                                           "reference_macs")})
    for key in ("latency", "bits", "bits_compression_ratio", "quantized_accuracy"):
        if key in report:
            metrics[key] = report[key]
    metrics["dense"] = {k: dense_metrics[k] for k in ("accuracy", "nll", "ece")}
    metrics["per_layer"] = report["per_layer"]
    metrics.update(_target_info(target))
    metrics.update(info)
    metrics["epochs"] = pruned.epochs(run)
    metrics["run"] = str(run.path)
    metrics["export"] = export_network(net, out, input_shape=data.input_shape, exported_program=opts.exported_program,
                                       onnx=opts.onnx, torchscript=opts.torchscript, bits=report.get("bits"),
                                       metadata={"source_run": str(run.path)})
    metrics["export_bytes"] = {k: Path(p).stat().st_size for k, p in metrics["export"].items() if p}
    for name, (tensors, meta) in pruned.artifacts.items():
        save_checkpoint(out / name, tensors, dict(meta))
    if model is not None:
        config = {k: v for k, v in run.config.items() if k in ("train", "data", "data_summary")}
        config["compressed_from"] = str(run.path)
        save_run(out / "bayesian", config, model=model.cpu(), guide=guide.cpu())
    write_csv(out / "history.csv", history)
    write_json(out / "metrics.json", metrics)
    mark_complete(out, str(info.get("method", "prune")), source_run=str(run.path))
    return metrics


def print_summary(metrics: dict[str, Any], out: str | Path) -> None:
    """One line of the headline numbers, the units per layer, and where the files are."""
    dense = metrics["dense"]
    line = (f"accuracy {metrics['accuracy']:.4f} (dense {dense['accuracy']:.4f})  params {metrics['params']} "
            f"nonzero {metrics['nonzero_params']} (ref {metrics['reference_params']})  "
            f"compression {metrics['compression_ratio']:.2f}x  speed-up (MACs) {metrics['speedup']:.2f}x")
    if "latency" in metrics:
        line += f"  latency ratio {metrics['latency']['ratio']:.2f}"
    print(line)
    print(f"units {metrics.get('units_change', metrics['units'])}")
    print(f"written to {out}")
