"""``pyrocompress prune`` and ``pyrocompress compress``: prune or self-compress a saved run.

Both read a run directory (``pyrocompress train --out``), write into ``--out``:

* ``metrics.json``: test accuracy, nll, ece (posterior predictive for Bayesian runs,
  plus ``mean_*`` of the posterior-mean network), params, nonzero_params,
  compression_ratio, flops, flops_nonzero, speedup, bytes (dense / csr / coo / bits),
  latency (compressed vs dense, CPU), bits and quantized_accuracy, units per layer,
  and the dense reference's metrics;
* ``history.csv``: the stages (prune) or rounds (compress) with validation metrics;
* the export: ``compressed.safetensors`` + ``architecture.json`` + TorchScript (and ONNX
  when installed), loadable with ``pyrocompress.load_compressed(OUT)``;
* ``bayesian/``: the compressed Bayesian model and guide as a run directory (Bayesian
  runs), trainable further.

``prune`` dispatches on ``--method`` through :data:`METHODS` (name -> function
``(run, data, args) -> PruneOutcome``); ``score`` (the default) prunes by a posterior
score. Other modules (baselines) add their methods to this dict and their arguments
through :data:`ARGUMENT_HOOKS` (functions ``(parser) -> None``).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["register", "METHODS", "ARGUMENT_HOOKS", "PruneOutcome", "write_outputs", "fit_options_of"]


@dataclass
class PruneOutcome:
    """What a pruning method produced: the plain compressed network, optionally its Bayesian
    model and guide, the history rows and extra metrics to report."""

    net: nn.Module
    model: Any = None
    guide: Any = None
    history: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def fit_options_of(run, args: argparse.Namespace) -> dict[str, Any]:
    """Training options for fine-tuning: the run's own, overridden by --lr / --batch-size / --device."""
    train = dict(run.config.get("train", {}))
    opts: dict[str, Any] = {"lr": train.get("lr", 1e-3), "batch_size": train.get("batch_size", 128),
                            "optimizer": train.get("optimizer", "adam"), "device": train.get("device", "auto")}
    if run.is_bayesian:
        opts.update({"estimator": train.get("estimator", "local_reparam"), "kl_weight": train.get("kl_weight", 1.0)})
    if getattr(args, "lr", None) is not None:
        opts["lr"] = args.lr
    if getattr(args, "batch_size", None) is not None:
        opts["batch_size"] = args.batch_size
    if getattr(args, "device", None) is not None:
        opts["device"] = args.device
    return opts


def _val(data):
    return data.val if len(data.val) > 0 else data.test


def eval_estimator_of(run, args: argparse.Namespace) -> str:
    """The posterior predictive's estimator: ``--eval-estimator``, or with ``auto`` the one the run
    was trained for (its own propagated moments after moment propagation, else weight sampling)."""
    from ..infer.predictive import resolve_eval_estimator

    return resolve_eval_estimator(getattr(args, "eval_estimator", None), run.config.get("train", {}).get("estimator"))


def _bayes_eval(model, guide, split, samples: int, seed: int, estimator: str = "local_reparam") -> dict[str, float]:
    from ..infer.predictive import evaluate

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return evaluate(model, split, guide, num_samples=samples, estimator=estimator)


def _stage_row(stage: str, model, guide, net, split, samples: int, seed: int, seconds: float,
               estimator: str = "local_reparam") -> dict[str, Any]:
    from ..infer.predictive import evaluate
    from ..metrics import parameter_counts
    from .shrink import unit_sizes

    if model is not None:
        m = _bayes_eval(model, guide, split, samples, seed, estimator)
        counts = parameter_counts(model, guide)["total"]
        units = unit_sizes(model)
    else:
        m = evaluate(net, split)
        counts = parameter_counts(net)["total"]
        units = unit_sizes(net)
    row: dict[str, Any] = {"stage": stage}
    row.update({f"units_{k}": v for k, v in units.items()})
    row.update({"params": counts["params"], "nonzero_params": counts["nonzero"], "val_accuracy": m["accuracy"],
                "val_nll": m["nll"], "val_ece": m["ece"], "seconds": seconds})
    return row


# ------------------------------------------------------------------ methods
def _method_score(run, data, args: argparse.Namespace) -> PruneOutcome:
    """Prune a Bayesian run by a posterior score; shrink; optionally fine-tune with SVI."""
    from ..infer.fit import fit
    from ..infer.guides import posterior_mean_network
    from .masks import Masks
    from .policy import PrunePolicy
    from .shrink import shrink

    if not run.is_bayesian:
        raise ValueError(f"{run.path} is a deterministic run: --method score needs a Bayesian run's posterior; "
                         f"valid methods: {sorted(METHODS)}")
    auto = bool(args.auto_threshold)
    sparsity = args.sparsity if (args.threshold is None and not auto) else None
    if sparsity is None and args.threshold is None and not auto:
        raise ValueError("give --sparsity, --threshold or --auto-threshold")
    policy = PrunePolicy(score=args.score, structure=args.structure, sparsity=sparsity, threshold=args.threshold,
                         auto=auto, per_layer=args.per_layer, ignored_layers=tuple(args.ignore or ()))
    split = _val(data)
    model, guide = run.model, run.guide
    est = eval_estimator_of(run, args)
    t0 = time.perf_counter()
    history = [_stage_row("dense", model, guide, None, split, args.eval_samples, args.seed, 0.0, est)]
    masks = policy.masks(model, guide)
    shrunk = shrink(model, guide, masks=masks)
    small_model, small_guide = shrunk.model, shrunk.guide
    history.append(_stage_row("pruned", small_model, small_guide, None, split, args.eval_samples, args.seed,
                              time.perf_counter() - t0, est))
    if args.finetune_epochs:
        t1 = time.perf_counter()
        hook = None
        if policy.structure == "weight":
            hook = Masks({n: small_guide.loc_of(f"{n}.weight").detach() != 0
                          for n, _ in small_model.bayes_layers()}).step_hook()
        fit(small_model, small_guide, data, epochs=args.finetune_epochs, seed=args.seed, step_hook=hook,
            **fit_options_of(run, args))
        history.append(_stage_row("finetuned", small_model, small_guide, None, split, args.eval_samples, args.seed,
                                  time.perf_counter() - t1, est))
    return PruneOutcome(net=posterior_mean_network(small_model, small_guide), model=small_model, guide=small_guide,
                        history=history, extra={"method": "score", "score": policy.score,
                                                "structure": policy.structure, "sparsity_target": sparsity,
                                                "threshold": args.threshold, "auto_threshold": auto,
                                                "per_layer": bool(args.per_layer),
                                                "mask_sparsity": masks.sparsity(),
                                                "units_change": shrunk.plan.summary()})


#: prune methods: name -> fn(run, data, args) -> PruneOutcome (baselines add theirs)
METHODS: dict[str, Callable[..., PruneOutcome]] = {"score": _method_score}
#: functions adding method-specific arguments to the prune parser
ARGUMENT_HOOKS: list[Callable[[argparse.ArgumentParser], None]] = []


# ------------------------------------------------------------------ outputs
def write_outputs(out: str | Path, run, data, outcome: PruneOutcome, args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate the compressed network against the run's dense one; write metrics, history, export."""
    from ..infer.guides import posterior_mean_network
    from ..infer.predictive import evaluate
    from ..runs import save_run, write_csv, write_json
    from .compression import compression_report, posterior_scales
    from .export import export_network

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dense = posterior_mean_network(run.model, run.guide) if run.is_bayesian else run.net
    net = outcome.net.cpu().eval()
    dense = dense.cpu().eval()
    if outcome.model is not None:
        est = eval_estimator_of(run, args)
        metrics = _bayes_eval(outcome.model, outcome.guide, data.test, args.eval_samples, args.seed, est)
        metrics.update({f"mean_{k}": v for k, v in evaluate(net, data.test).items()})
        scales = {k: v.cpu() for k, v in posterior_scales(outcome.model, outcome.guide).items()}
        dense_metrics = _bayes_eval(run.model, run.guide, data.test, args.eval_samples, args.seed, est)
        metrics["eval_estimator"] = est
    else:
        metrics = evaluate(net, data.test)
        scales = None
        dense_metrics = evaluate(dense, data.test)
    report = compression_report(net, data.input_shape, reference=dense, scales=scales, split=data.test,
                                latency=not args.no_latency, latency_repeats=args.latency_repeats)
    metrics.update({k: report[k] for k in ("params", "nonzero_params", "compression_ratio", "flops", "flops_nonzero",
                                           "speedup", "bytes", "units", "reference_units", "reference_params",
                                           "reference_flops")})
    for key in ("latency", "bits", "bits_compression_ratio", "quantized_accuracy"):
        if key in report:
            metrics[key] = report[key]
    metrics["dense"] = {k: dense_metrics[k] for k in ("accuracy", "nll", "ece")}
    metrics["per_layer"] = report["per_layer"]
    metrics.update(outcome.extra)
    metrics["run"] = str(run.path)
    paths = export_network(net, out, input_shape=data.input_shape, metadata={"source_run": str(run.path)})
    metrics["export"] = paths
    if outcome.model is not None:
        config = {k: v for k, v in run.config.items() if k in ("train", "data", "data_summary")}
        config["compressed_from"] = str(run.path)
        save_run(out / "bayesian", config, model=outcome.model.cpu(), guide=outcome.guide.cpu())
    write_csv(out / "history.csv", outcome.history)
    write_json(out / "metrics.json", metrics)
    return metrics


def _print_summary(metrics: dict[str, Any], out: str) -> None:
    dense = metrics["dense"]
    line = (f"accuracy {metrics['accuracy']:.4f} (dense {dense['accuracy']:.4f})  params {metrics['params']} "
            f"nonzero {metrics['nonzero_params']} (ref {metrics['reference_params']})  "
            f"compression {metrics['compression_ratio']:.2f}x  speed-up (FLOPs) {metrics['speedup']:.2f}x")
    if "latency" in metrics:
        line += f"  latency ratio {metrics['latency']['ratio']:.2f}"
    print(line)
    print(f"units {metrics['units']}")
    print(f"written to {out}")


def _cmd_prune(args: argparse.Namespace) -> int:
    from ..runs import load_run

    if args.method not in METHODS:
        raise ValueError(f"unknown method {args.method!r}; valid methods: {sorted(METHODS)}")
    if args.sparsity is not None and (args.threshold is not None or args.auto_threshold):
        raise ValueError("give only one of --sparsity, --threshold, --auto-threshold")
    if args.sparsity is not None:
        from .policy import check_sparsity

        check_sparsity(args.sparsity)
    run = load_run(args.run_dir)
    data = run.load_data()
    outcome = METHODS[args.method](run, data, args)
    metrics = write_outputs(args.out, run, data, outcome, args)
    _print_summary(metrics, args.out)
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    from ..runs import load_run
    from .selfcompress import self_compress

    run = load_run(args.run_dir)
    if not run.is_bayesian:
        raise ValueError(f"{run.path} is a deterministic run: self-compression needs a Bayesian run")
    if args.sparsity is not None and args.iterative:
        raise ValueError("--sparsity is a one-shot rule; drop --iterative or use --threshold / --auto-threshold")
    data = run.load_data()
    result = self_compress(run.model, run.guide, data, score=args.score, structure=args.structure,
                           iterative=args.iterative, sparsity=args.sparsity, threshold=args.threshold,
                           per_layer=args.per_layer, ignored_layers=tuple(args.ignore or ()),
                           min_separation=args.min_separation, tolerance=args.tolerance, max_rounds=args.max_rounds,
                           finetune_epochs=args.finetune_epochs, warm_start=not args.retrain,
                           eval_samples=args.eval_samples, seed=args.seed, fit_options=fit_options_of(run, args))
    outcome = PruneOutcome(net=result.net, model=result.model, guide=result.guide, history=result.history,
                           extra={"method": "self_compress", "iterative": bool(args.iterative), "score": args.score,
                                  "structure": args.structure, "tolerance": args.tolerance,
                                  "rounds": result.rounds, "stop_reason": result.stop_reason})
    metrics = write_outputs(args.out, run, data, outcome, args)
    print(f"self-compression stopped: {result.stop_reason}")
    _print_summary(metrics, args.out)
    return 0


def _common(p: argparse.ArgumentParser, structure: str, score: str) -> None:
    from ..diagnostics.scores import score_names
    from ..infer.predictive import EVAL_ESTIMATORS
    from .policy import STRUCTURES

    p.add_argument("run_dir", help="run directory written by `pyrocompress train --out`")
    p.add_argument("--score", default=score, help=f"one of {score_names()}")
    p.add_argument("--structure", default=structure, help=f"one of {list(STRUCTURES)}")
    p.add_argument("--per-layer", action="store_true", help="rank within each layer instead of globally")
    p.add_argument("--sparsity", type=float, default=None, help="fraction of weights (or units) to delete, in [0, 1)")
    p.add_argument("--threshold", type=float, default=None, help="delete what scores below this")
    p.add_argument("--ignore", action="append", metavar="LAYER", help="layer (or glob) to leave untouched")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the run's)")
    p.add_argument("--batch-size", type=int, default=None, help="fine-tuning batch size (default: the run's)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: the run's)")
    p.add_argument("--eval-samples", type=int, default=32, help="posterior samples for metrics")
    p.add_argument("--eval-estimator", default="auto",
                   choices=EVAL_ESTIMATORS,
                   help="how the posterior predictive is drawn (auto: as the run was trained; its own moments "
                        "after moment propagation, else weight_sampling; local_reparam draws per example)")
    p.add_argument("--latency-repeats", type=int, default=50, help="forward passes timed for the latency median")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a run by a score (posterior or baseline), shrink, export")
    _common(p, structure="weight", score="snr")
    p.add_argument("--method", default="score", help="pruning method (default score: a posterior score); "
                   "see pyrocompress.prune.cli.METHODS")
    p.add_argument("--auto-threshold", action="store_true",
                   help="per-layer automatic threshold from the score distribution")
    p.add_argument("--finetune-epochs", type=int, default=0, help="SVI fine-tuning epochs after pruning")
    from .baselines import register_prune_cli  # --method magnitude|random|imp|lottery|gradual (deterministic twin)

    register_prune_cli(METHODS, ARGUMENT_HOOKS)
    for hook in ARGUMENT_HOOKS:
        hook(p)
    p.set_defaults(func=_cmd_prune)

    c = sub.add_parser("compress", help="self-compression: delete what the posterior marks redundant, retrain, "
                                        "repeat; export")
    _common(c, structure="unit", score="norm")
    c.add_argument("--iterative", action="store_true", help="repeat delete + train until nothing is redundant")
    c.add_argument("--tolerance", type=float, default=0.5, help="allowed validation accuracy loss, in points")
    c.add_argument("--max-rounds", type=int, default=10)
    c.add_argument("--finetune-epochs", type=int, default=None,
                   help="SVI epochs after each deletion (default 5 iterative, 0 one-shot)")
    c.add_argument("--retrain", action="store_true", help="retrain the smaller network from scratch each round "
                                                          "(default: continue from the surviving posterior)")
    c.add_argument("--min-separation", type=float, default=0.5,
                   help="automatic threshold: decades between the near-zero mode and the rest")
    c.set_defaults(func=_cmd_compress)
