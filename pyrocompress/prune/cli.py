"""``pyrocompress prune`` and ``pyrocompress compress``: prune or self-compress a saved run.

Both read a run directory (``pyrocompress train --out``) and write into ``--out`` what
:func:`pyrocompress.prune.outputs.write_outputs` describes. ``prune --method NAME`` runs any
family of the method registry (:mod:`pyrocompress.prune.methods`; default ``bayes``, a
posterior score); ``compress`` runs ``self_compress``. The flags are turned into the method's
options and a target here, once, and checked by the registry before anything is written.
``--out`` is checked first (not the source run, not a file, writable, holding no other
result unless ``--overwrite``), locked while the work runs, and marked ``COMPLETE`` last.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import UserError
from .._files import check_output_folder, output_folder
from ..diagnostics.scores import score_names
from ..infer.predictive import EVAL_ESTIMATORS, resolve_eval_estimator
from ..infer.fit import check_scales_moved
from ..names import GradualStart, Kind, Schedule, Scope, Structure
from ..runs import load_run
from .methods import Context, OptionError, method_class, method_for_run, method_names
from .outputs import HistoryRecorder, OutputOptions, print_summary, write_outputs
from .targets import Target, make_target

__all__ = ["register", "method_options", "OPTION_FLAGS"]

#: the flags that are method options (their ``dest`` is the option's key)
OPTION_FLAGS = ("score", "structure", "scope", "finetune_epochs", "rounds", "rewind_epoch", "rate", "train_epochs",
                "budget_epochs", "pruning_steps", "schedule", "start", "ignored_layers", "tolerance", "max_rounds",
                "min_separation")


def _flag(key: str) -> str:
    return "--ignore" if key == "ignored_layers" else "--" + key.replace("_", "-")


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method options the user gave on the command line (flags left out are the method's defaults)."""
    options = {k: getattr(args, k) for k in OPTION_FLAGS if getattr(args, k, None) is not None}
    if getattr(args, "per_layer", False):
        if options.get("scope", "layer") not in ("layer", Scope.LAYER):
            raise UserError("--per-layer contradicts --scope global; give one of them")
        options["scope"] = "layer"
    if getattr(args, "iterative", False):
        options["mode"] = "iterative"
    if getattr(args, "retrain", False):
        options["warm_start"] = False
    return options


def _target(args: argparse.Namespace) -> Target | None:
    return make_target(sparsity=args.sparsity, compression=args.compression, threshold=args.threshold,
                       auto=bool(getattr(args, "auto_threshold", False)),
                       min_separation=args.min_separation if args.min_separation is not None else 0.5)


def _run(args: argparse.Namespace, family: str, options: dict[str, Any]) -> tuple[dict, Any]:
    """Build the method and target (all checks), load the run, prune it, write the outputs."""
    method_class(family)  # an unknown name fails before the run is read
    target = _target(args)
    check_output_folder(args.out, overwrite=args.overwrite, sources=[args.run_dir])
    run = load_run(args.run_dir)
    try:
        method = method_for_run(family, options, run.is_bayesian)
    except OptionError as exc:
        flag = f"{_flag(exc.key)}: " if exc.key in OPTION_FLAGS else ""
        raise UserError(f"{flag}{exc}") from None
    method.check_target(target)
    if run.is_bayesian and method.start() is Kind.BAYESIAN:
        check_scales_moved(run.guide, f"{args.command} {run.path}")  # a warning with the fix; the work goes on
    data = run.load_data()
    estimator = resolve_eval_estimator(args.eval_estimator, run.config.get("train", {}).get("estimator"))
    split = data.val if len(data.val) > 0 else data.test
    recorder = HistoryRecorder(split, args.eval_samples, args.seed, estimator)
    ctx = Context.of_run(run, data, seed=args.seed, eval_samples=args.eval_samples, progress=recorder,
                         fit_overrides={"lr": args.lr, "batch_size": args.batch_size, "device": args.device,
                                        "progress": not args.quiet})
    opts = OutputOptions(eval_samples=args.eval_samples, eval_estimator=estimator, latency=not args.no_latency,
                         latency_repeats=args.latency_repeats, seed=args.seed,
                         exported_program=args.exported_program, onnx=args.onnx, torchscript=args.torchscript)
    with output_folder(args.out, getattr(args, "command", family), overwrite=args.overwrite, sources=[args.run_dir]):
        pruned = method.run(ctx, target)
        return write_outputs(args.out, run, data, pruned, recorder.history, target, opts), pruned


def _cmd_prune(args: argparse.Namespace) -> int:
    metrics, _ = _run(args, args.method, method_options(args))
    print_summary(metrics, args.out)
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    metrics, pruned = _run(args, "self_compress", method_options(args))
    print(f"self-compression stopped: {pruned.info['stop_reason']}")
    print_summary(metrics, args.out)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run directory written by `pyrocompress train --out`")
    p.add_argument("--score", default=None, help=f"one of {score_names()} (default: the method's)")
    p.add_argument("--structure", default=None, help=f"one of {[s.value for s in Structure]} (default: the method's)")
    p.add_argument("--scope", default=None, help="rank globally or within each layer: global, layer (default: the method's)")
    p.add_argument("--per-layer", action="store_true", help="rank within each layer (same as --scope layer)")
    p.add_argument("--sparsity", type=float, default=None, help="fraction of weights (or units) to delete, in [0, 1) (default: the method's own target)")
    p.add_argument("--compression", type=float, default=None,
                   help="target compression ratio (dense parameters / nonzero parameters), as a study's grid "
                        "(default: none; give one target)")
    p.add_argument("--threshold", type=float, default=None, help="delete what scores below this (default: none; give one target)")
    p.add_argument("--min-separation", type=float, default=None,
                   help="automatic threshold: decades between the near-zero mode and the rest (default 0.5)")
    p.add_argument("--ignore", dest="ignored_layers", action="append", metavar="LAYER",
                   help="layer (or glob) to leave untouched; repeatable (default: none)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="fine-tuning epochs after pruning (default: the method's)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the run's)")
    p.add_argument("--batch-size", type=int, default=None, help="fine-tuning batch size (default: the run's)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: the run's)")
    p.add_argument("--eval-samples", type=int, default=32, help="posterior samples of the predictive for the metrics")
    p.add_argument("--eval-estimator", default="auto", choices=EVAL_ESTIMATORS,
                   help="how the posterior predictive is drawn (auto: as the run was trained; its own moments "
                        "after moment propagation, else weight_sampling; local_reparam draws per example)")
    p.add_argument("--latency-repeats", type=int, default=50,
                   help="forward passes timed (torch.utils.benchmark) for the latency median")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--seed", type=int, default=0, help="random seed of the method and of the metrics' draws")
    p.add_argument("--out", required=True, help="output folder (new or empty, unless --overwrite; never the run)")
    p.add_argument("--overwrite", action="store_true", help="replace the result --out holds (it is deleted first)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    x = p.add_argument_group("export formats (always: dense and CSR safetensors + architecture.json; with a "
                             "posterior: CSR quantised to its bit widths)")
    x.add_argument("--exported-program", action=argparse.BooleanOptionalAction, default=True,
                   help="write compressed.pt2, a torch.export ExportedProgram")
    x.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=False,
                   help="write compressed.onnx with the dynamo ONNX exporter (needs pip install 'pyrocompress[onnx]')")
    x.add_argument("--torchscript", action=argparse.BooleanOptionalAction, default=False,
                   help="write compressed.torchscript.pt (TorchScript is deprecated by torch; while it still exists)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``prune`` and ``compress`` sub-commands."""
    p = sub.add_parser("prune", help="prune a run by any registered method (posterior score or baseline), shrink, "
                                     "export")
    _common(p)
    p.add_argument("--method", default="bayes",
                   help=f"one of {method_names()} (default bayes: prune by a posterior score; alias score)")
    p.add_argument("--auto-threshold", action="store_true",
                   help="per-layer automatic threshold (the prior's own rule where it has one)")
    g = p.add_argument_group("deterministic baselines (--method magnitude|random|imp|lottery|gradual)")
    g.add_argument("--rounds", type=int, default=None, help="imp / lottery: pruning rounds (default 5)")
    g.add_argument("--rewind-epoch", type=int, default=None,
                   help="lottery: rewind kept weights to the end of this epoch (default 0: the initial weights)")
    g.add_argument("--rate", type=float, default=None,
                   help="lottery without --sparsity: fraction of the remaining weights pruned per round "
                        "(default 0.2; output layer at half rate)")
    g.add_argument("--train-epochs", type=int, default=None,
                   help="lottery: epochs of every retraining from the rewind point (default: the run's epochs)")
    g.add_argument("--budget-epochs", type=int, default=None,
                   help="total epoch budget, the run's dense training included: the method's fine-tuning / "
                        "retraining epochs are set so that every method uses the same total (default: none)")
    g.add_argument("--pruning-steps", type=int, default=None, help="gradual: number of mask updates (default 20)")
    g.add_argument("--start", default=None, help=f"gradual: start from the trained run or its initial weights "
                                                 f"({[s.value for s in GradualStart]}; default trained)")
    g.add_argument("--schedule", default=None,
                   help=f"lottery: {[s.value for s in Schedule]} (default: per_point)")
    p.set_defaults(func=_cmd_prune)

    c = sub.add_parser("compress", help="self-compression: delete what the posterior marks redundant, retrain, "
                                        "repeat; export")
    _common(c)
    c.add_argument("--iterative", action="store_true", help="repeat delete + train until nothing is redundant")
    c.add_argument("--tolerance", type=float, default=None, help="allowed validation accuracy loss, in points "
                                                                 "(default 0.5)")
    c.add_argument("--max-rounds", type=int, default=None, help="at most this many rounds (default 10)")
    c.add_argument("--retrain", action="store_true", help="retrain the smaller network from scratch each round "
                                                          "(default: continue from the surviving posterior)")
    c.set_defaults(func=_cmd_compress)
