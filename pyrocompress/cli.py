"""The ``pyrocompress`` command line: the top layer, above every package it drives.

Sub-commands are contributed by the ``register(subparsers)`` functions of :data:`COMMAND_MODULES`
(``train`` and ``evaluate`` here; ``diagnose``, ``reference``, ``prune``, ``compress``,
``study`` and ``report`` in their packages' ``cli`` modules), each adding its parser(s) with
``set_defaults(func=...)``. Errors in what the user gave (names, shapes, files, output
folders) are the package's own :class:`~pyrocompress.errors.PyrocompressError` and end with a
one-line message and exit status 2, as do the machine's (a full disk, a permission); anything
else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ._files import check_output_folder
from ._version import __version__
from .data import DATASETS
from .errors import PyrocompressError, UserError
from .infer.estimators import ESTIMATORS
from .infer.fit import DEFAULT_SCALE_LR_FACTOR, LR_SCHEDULES, OPTIMIZERS
from .infer.guides import GUIDES, posterior_mean_network
from .infer.predictive import evaluate, predictive_estimator
from .nn.priors import PRIORS
from .nn.zoo import MODELS
from .runs import load_run, write_json
from .training import TrainConfig, train

__all__ = ["main", "build_parser", "COMMAND_MODULES", "COMMAND_OWNERS", "parse_options", "UserError", "HelpFormatter", "DESCRIPTION"]

#: what ``pyrocompress --help`` says first (plain text: a terminal shows it as written)
DESCRIPTION = ("pyrocompress: Bayesian neural networks as Pyro models, trained with SVI, pruned by their "
               "posteriors, compared against magnitude pruning in studies, and exported for deployment.")
EPILOG = """\
a workflow:
  pyrocompress train --dataset digits --out runs/mlp         train a Bayesian network
  pyrocompress diagnose runs/mlp                             read its posterior
  pyrocompress prune runs/mlp --sparsity 0.9 --out pruned    prune it, shrink it, export it
  pyrocompress study --out studies/default                   compare methods over seeds and ratios

'pyrocompress COMMAND --help' lists a command's options with their defaults."""


class HelpFormatter(argparse.HelpFormatter):
    """Every command's help: each option's default appended to its text (unless the text already says what
    the default is, or the option is a switch); descriptions wrapped to the terminal by paragraph, except
    paragraphs with indented lines (examples), which keep their lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if any(line[:1].isspace() for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(textwrap.fill(" ".join(lines), width, initial_indent=indent,
                                                subsequent_indent=indent))
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        switch = action.nargs == 0  # store_true / store_false / count / help / version
        if action.option_strings and not switch and not action.required and \
                action.default not in (None, argparse.SUPPRESS) and "default" not in text.lower():
            text += " (default: %(default)s)"
        return text

#: the modules whose ``register(subparsers)`` add the sub-commands, in the order of ``pyrocompress --help``
COMMAND_MODULES: list[str] = [
    "pyrocompress.cli",
    "pyrocompress.diagnostics.cli",
    "pyrocompress.prune.cli",
    "pyrocompress.study.cli",
    "pyrocompress.diagnostics.reference_cli",
]


def parse_options(items: Optional[Sequence[str]]) -> dict[str, Any]:
    """Parse ``key=value`` pairs; values are read as JSON when they parse (numbers, lists)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"option {item!r} must look like key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    keys = ["accuracy", "nll", "ece", "brier", "mean_accuracy", "params", "nonzero_params", "epochs", "seconds"]
    parts = []
    for k in keys:
        if k in metrics and metrics[k] is not None:
            v = metrics[k]
            parts.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
    print(f"{title}: " + "  ".join(parts))


# ----------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    prior: Any = args.prior
    if prior.strip().startswith("{"):
        try:
            prior = json.loads(prior)
        except json.JSONDecodeError as exc:
            raise UserError(f"--prior {args.prior!r} starts like a JSON per-layer mapping but is not valid JSON "
                            f"({exc}); e.g. --prior '{{\"fc1\": \"normal:0.1\", \"default\": \"log_uniform\"}}'"
                            ) from None
    cfg = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, val_fraction=args.val_fraction, limit=args.limit,
                      model=args.model, model_options=parse_options(args.model_option),
                      deterministic=args.deterministic, prior=prior, guide=args.guide, init_scale=args.init_scale,
                      estimator=args.estimator, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, lr_schedule=args.lr_schedule, kl_weight=args.kl_weight,
                      kl_anneal_epochs=args.kl_anneal_epochs, scale_lr=args.scale_lr, scale_lr_factor=args.scale_lr_factor, init_from=args.init_from,
                      particles=args.particles, seed=args.seed,
                      device=args.device, patience=args.patience, eval_samples=args.eval_samples)
    cfg.validate()
    check_output_folder(args.out, overwrite=args.overwrite, resume=args.resume,
                        sources=[args.init_from] if args.init_from else [],
                        resume_hint="continue it with --resume (and the options it was started with)")
    try:
        run = train(cfg, out=args.out, progress=not args.quiet, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(f"pyrocompress train: interrupted; continue with the same command and --resume "
              f"(the last finished epoch is kept in {args.out})", file=sys.stderr)
        return 130
    kind = "deterministic" if cfg.deterministic else f"Bayesian ({cfg.estimator})"
    if run.resumed_after is not None:
        print(f"resumed after epoch {run.resumed_after}")
    _print_metrics(f"{cfg.model} on {cfg.dataset}, {kind}, test", run.metrics)
    print(f"run written to {run.path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir)
    target = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    if target.is_dir():
        raise UserError(f"--out {target} is a folder; give the file to write the metrics to")
    writable = os.access(target.parent, os.W_OK | os.X_OK) and (not target.exists() or os.access(target, os.W_OK))
    if args.out and not writable:
        raise UserError(f"--out {target}: {target.parent} is not writable; give a file you can write")
    data = run.load_data()
    if run.is_bayesian:
        estimator = predictive_estimator(run.config.get("train", {}).get("estimator", "local_reparam"))
        metrics = evaluate(run.model, data.test, run.guide, num_samples=args.samples, estimator=estimator)
        mean = evaluate(posterior_mean_network(run.model, run.guide), data.test)
        metrics.update({f"mean_{k}": v for k, v in mean.items()})
    else:
        metrics = evaluate(run.net, data.test)
    _print_metrics(f"{run.path} test", metrics)
    if run.metrics.get("accuracy") is not None:
        print(f"stored accuracy {run.metrics['accuracy']:.4f}, re-evaluated {metrics['accuracy']:.4f}")
    if writable:
        write_json(target, metrics)
    else:
        print(f"pyrocompress evaluate: {args.run_dir} is read-only, so evaluation.json was not written there; "
              "give --out FILE to keep the metrics", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``evaluate`` sub-commands."""
    p = sub.add_parser("train", help="train a Bayesian network with SVI (or its deterministic twin)")
    p.add_argument("--dataset", default="digits", help=f"one of {list(DATASETS)}")
    p.add_argument("--data-dir", default=None,
                   help="folder with the IDX files (default: the standard places, see docs/user_guide.md)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train/test examples (default: all)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of the training set held out for validation")
    p.add_argument("--model", default="mlp", help=f"one of {sorted(MODELS)}")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="model option, e.g. kernels=64 or hidden=[300,100]; repeatable (default: the model's own)")
    p.add_argument("--deterministic", action="store_true", help="train the plain deterministic twin")
    p.add_argument("--prior", default="normal",
                   help=f"one of {sorted(PRIORS)} (e.g. normal:0.1) or a JSON per-layer mapping")
    p.add_argument("--guide", default="mean_field", help=f"one of {list(GUIDES)}")
    p.add_argument("--init-scale", type=float, default=1e-3, help="initial guide standard deviation")
    p.add_argument("--estimator", default="local_reparam",
                   help=f"one of {sorted(ESTIMATORS)} or moment_propagation[:relu=taylor,pool=argmax,...]")
    p.add_argument("--epochs", type=int, default=10, help="training epochs")
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (of the means, for a Bayesian run)")
    p.add_argument("--optimizer", default="adam", help=f"one of {list(OPTIMIZERS)}")
    p.add_argument("--lr-schedule", default=None, help=f"one of {[s for s in LR_SCHEDULES if s]} (default: constant)")
    p.add_argument("--kl-weight", type=float, default=1.0, help="weight of the KL term of the ELBO")
    p.add_argument("--kl-anneal-epochs", type=int, default=0, help="linear KL warm-up over this many epochs")
    p.add_argument("--scale-lr", type=float, default=None,
                   help="learning rate of the posterior scales (default: 10 x --lr; Adam moves a parameter by about "
                        "its learning rate per step, and log-scales must cross decades)")
    p.add_argument("--scale-lr-factor", type=float, default=DEFAULT_SCALE_LR_FACTOR,
                   help="without --scale-lr, the scales learn at this multiple of --lr (short runs faster: enough "
                        "steps to cross the decades)")
    p.add_argument("--init-from", default=None, metavar="RUN",
                   help="start from a trained run's weights (a deterministic twin: the guide's means); its "
                        "epochs count as pre-training (default: a fresh initialisation)")
    p.add_argument("--particles", type=int, default=1, help="ELBO particles per step")
    p.add_argument("--seed", type=int, default=0, help="random seed (initialisation, data order, draws)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--patience", type=int, default=None, help="stop after N epochs without a better validation NLL (default: no early stopping)")
    p.add_argument("--eval-samples", type=int, default=32, help="posterior samples for test metrics")
    p.add_argument("--out", required=True, help="run directory to write (new or empty, unless --overwrite or --resume)")
    p.add_argument("--overwrite", action="store_true", help="replace the result --out holds (it is deleted first)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out after its last finished epoch (optimizer, schedule, "
                        "random state and history included; give the options it was started with)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="re-evaluate a saved run on its test split")
    e.add_argument("run_dir", help="run directory written by `pyrocompress train --out`")
    e.add_argument("--samples", type=int, default=32, help="posterior samples of the predictive")
    e.add_argument("--out", default=None, metavar="FILE",
                   help="where to write the metrics (default RUN_DIR/evaluation.json)")
    e.set_defaults(func=_cmd_evaluate)


#: the module of ``COMMAND_MODULES`` that registers each sub-command. For start-up time, ``main``
#: imports only the module of the command it runs (prune, diagnostics and study pull in xarray,
#: pandas and scikit-learn, which ``train`` and ``evaluate`` never use); help imports them all
COMMAND_OWNERS: dict[str, str] = {
    "train": "pyrocompress.cli", "evaluate": "pyrocompress.cli", "diagnose": "pyrocompress.diagnostics.cli",
    "prune": "pyrocompress.prune.cli", "compress": "pyrocompress.prune.cli", "study": "pyrocompress.study.cli",
    "report": "pyrocompress.study.cli", "reference": "pyrocompress.diagnostics.reference_cli",
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``pyrocompress`` parser, all with :class:`HelpFormatter`: every sub-command, or with
    ``command`` only those of the module that registers it (start-up time)."""
    parser = argparse.ArgumentParser(prog="pyrocompress", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    modules = [COMMAND_OWNERS[command]] if command in COMMAND_OWNERS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(sub)
    for parser_of_command in sub.choices.values():  # one formatter for all: defaults shown, descriptions as written
        parser_of_command.formatter_class = HelpFormatter
    return parser


def _os_message(exc: OSError) -> str:
    """One line for an error of the machine: what failed, where."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}" if exc.strerror else str(exc)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one sub-command; the package's errors and the machine's (OSError) are one line and status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PyrocompressError as exc:
        print(f"pyrocompress {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pyrocompress {args.command}: error: {_os_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyrocompress {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
