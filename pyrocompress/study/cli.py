"""``pyrocompress study [CONFIG.toml]`` and ``pyrocompress report STUDY_DIR``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from .config import copy_config, default_config_text, is_device, load_config
from .executors import EXECUTORS, ClusterError, check_address
from .report import trial_counts, write_report
from .runner import run_study

__all__ = ["register", "positive_int"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--threads 0``, ``--max-trials -1`` are refused with the flag's name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _warn_incomplete(study_dir: Path) -> None:
    counts = trial_counts(study_dir)
    if counts["unreadable"]:
        print(f"warning: {len(counts['unreadable'])} trial record(s) in {study_dir / 'trials'} cannot be read "
              f"({', '.join(counts['unreadable'][:5])}); run the study again to redo them", file=sys.stderr)


def _cmd_study(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.print_config:
        print(Path(args.config).read_text() if args.config else default_config_text(), end="")
        return 0
    if args.executor not in EXECUTORS:
        raise UserError(f"unknown executor {args.executor!r}; valid executors: {list(EXECUTORS)}")
    if args.device is not None:
        if not is_device(args.device):
            raise UserError(f"--device {args.device!r}: give auto, cpu, cuda or cuda:N")
        cfg = copy_config(cfg, device=args.device)
    check_address(args.address)
    if not args.connect_timeout > 0:
        raise UserError(f"--connect-timeout must be a positive number of seconds, got {args.connect_timeout}")
    out = (Path(args.out) if args.out else Path("studies") / cfg.name).expanduser().resolve()
    print(f"study {cfg.name!r} ({cfg.source}) on {cfg.device} -> {out}")
    try:
        result = run_study(cfg, out, workers=args.workers, executor=args.executor, address=args.address,
                           threads=args.threads, progress=not args.quiet, retry_failed=not args.no_retry,
                           max_trials=args.max_trials, gpus_per_trial=args.gpus_per_trial,
                           connect_timeout=args.connect_timeout)
    except ClusterError as exc:
        print(f"pyrocompress study: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyrocompress study: interrupted; finished trials are kept in {out}, run the same command to resume",
              file=sys.stderr)
        return 130
    print(result.summary())
    if not args.no_report:
        paths = write_report(out)
        print(f"report: {paths['html']} and {paths['markdown']}")
        _warn_incomplete(out)
    if result.failed:
        print(f"{len(result.failed)} trial(s) failed; their errors are in results.csv and logs/: "
              f"{', '.join(result.failed[:5])}{' ...' if len(result.failed) > 5 else ''}")
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    paths = write_report(args.study_dir, out=args.out, point=args.point)
    print(f"{trial_counts(args.study_dir)['text']}")
    print(f"report: {paths['html']} and {paths['markdown']}")
    _warn_incomplete(Path(args.study_dir))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run a comparative pruning study (no file: the embedded default)",
                       description="Train each (data set, model, seed) once, Bayesian and deterministic, prune "
                                   "them by every method at every operating point, record each trial, and write "
                                   "the report. Running it again resumes.")
    p.add_argument("config", nargs="?", default=None, help="study TOML file (default: the embedded default study)")
    p.add_argument("--out", default=None, help="study directory (default: studies/<study name>)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="parallel worker processes (local executor; with ray and no --address: the local "
                        "instance's CPUs)")
    p.add_argument("--executor", default="local", help="local (processes on this machine) or ray")
    p.add_argument("--address", default=None,
                   help="Ray cluster: auto (started on this machine), ray://HOST:10001 (Ray client) or HOST:6379; "
                        "a token of Ray's token authentication is sent when RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                        "~/.ray/auth_token has one (default: a new local Ray instance, stopped at the end)")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="fail when the Ray cluster does not answer within this many seconds")
    p.add_argument("--device", default=None,
                   help="auto, cpu, cuda or cuda:N for every training and trial; not part of the study's identity, "
                        "so a study resumes on another device (default: the configuration's [study] device)")
    p.add_argument("--gpus-per-trial", type=float, default=None, metavar="N",
                   help="Ray: GPUs each job asks for on a cuda device; a fraction shares a GPU, e.g. 0.25 "
                        "(default: 1 on cuda, none on cpu)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--max-trials", type=positive_int, default=None,
                   help="run at most N trials now and resume later (default: all)")
    p.add_argument("--no-retry", action="store_true", help="do not retry trials that failed before")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--print-config", action="store_true", help="print the configuration's TOML and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_study)

    r = sub.add_parser("report", help="write the HTML and Markdown report of a study directory")
    r.add_argument("study_dir", help="study directory written by `pyrocompress study --out`")
    r.add_argument("--out", default=None, help="report folder (default: STUDY_DIR/report)")
    r.add_argument("--point", type=float, default=None,
                   help="compression ratio of the per-layer sparsity figure (default: the study's report_point)")
    r.set_defaults(func=_cmd_report)
