"""The ``pyrocompress`` command line: the top layer, above every package it drives.

Sub-commands are contributed by the ``register(subparsers)`` functions in :data:`COMMANDS`
(``train`` and ``evaluate`` here; ``diagnose``, ``reference``, ``prune``, ``compress``,
``study`` and ``report`` in their packages' ``cli`` modules), each adding its parser(s) with
``set_defaults(func=...)``. Errors in what the user gave (names, shapes, files) end with a
one-line message and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ._version import __version__
from .data import DATASETS, DataError
from .diagnostics import cli as diagnostics_cli
from .diagnostics import reference_cli
from .infer.estimators import ESTIMATORS
from .infer.fit import LR_SCHEDULES, OPTIMIZERS, DivergenceError
from .infer.guides import GUIDES, posterior_mean_network
from .metrics import evaluate, predictive_estimator
from .nn.priors import PRIORS
from .nn.zoo import MODELS
from .prune import cli as prune_cli
from .runs import RunError, load_run, write_json
from .study import cli as study_cli
from .training import TrainConfig, train

__all__ = ["main", "build_parser", "COMMANDS", "parse_options", "UserError", "HelpFormatter", "DESCRIPTION"]

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


class UserError(Exception):
    """An error in what the user asked for; printed without a traceback."""


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
        prior = json.loads(prior)
    cfg = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, val_fraction=args.val_fraction, limit=args.limit,
                      model=args.model, model_options=parse_options(args.model_option),
                      deterministic=args.deterministic, prior=prior, guide=args.guide, init_scale=args.init_scale,
                      estimator=args.estimator, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, lr_schedule=args.lr_schedule, kl_weight=args.kl_weight,
                      kl_anneal_epochs=args.kl_anneal_epochs, scale_lr=args.scale_lr, init_from=args.init_from,
                      particles=args.particles, seed=args.seed,
                      device=args.device, patience=args.patience, eval_samples=args.eval_samples)
    run = train(cfg, out=args.out, progress=not args.quiet)
    kind = "deterministic" if cfg.deterministic else f"Bayesian ({cfg.estimator})"
    _print_metrics(f"{cfg.model} on {cfg.dataset}, {kind}, test", run.metrics)
    print(f"run written to {run.path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir)
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
    write_json(Path(args.run_dir) / "evaluation.json", metrics)
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
    p.add_argument("--init-from", default=None, metavar="RUN",
                   help="start from a trained run's weights (a deterministic twin: the guide's means); its "
                        "epochs count as pre-training (default: a fresh initialisation)")
    p.add_argument("--particles", type=int, default=1, help="ELBO particles per step")
    p.add_argument("--seed", type=int, default=0, help="random seed (initialisation, data order, draws)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--patience", type=int, default=None, help="stop after N epochs without a better validation NLL (default: no early stopping)")
    p.add_argument("--eval-samples", type=int, default=32, help="posterior samples for test metrics")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="re-evaluate a saved run on its test split")
    e.add_argument("run_dir", help="run directory written by `pyrocompress train --out`")
    e.add_argument("--samples", type=int, default=32, help="posterior samples of the predictive")
    e.set_defaults(func=_cmd_evaluate)


#: the functions adding the sub-commands, in the order of ``pyrocompress --help``
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    register, diagnostics_cli.register, prune_cli.register, study_cli.register, reference_cli.register]


def build_parser() -> argparse.ArgumentParser:
    """The ``pyrocompress`` parser: every sub-command of :data:`COMMANDS`, all with :class:`HelpFormatter`."""
    parser = argparse.ArgumentParser(prog="pyrocompress", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for add in COMMANDS:
        add(sub)
    for command in sub.choices.values():  # one formatter for all: defaults shown, descriptions as written
        command.formatter_class = HelpFormatter
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, DataError, RunError, DivergenceError, ValueError, TypeError, FileNotFoundError,
            json.JSONDecodeError) as exc:
        print(f"pyrocompress {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
