"""``pyrocompress diagnose RUN_DIR``: per-layer table, diagnostics.nc and figures of a run."""
from __future__ import annotations

import argparse

import pandas as pd

from .report import DIAGNOSTICS_DIR, diagnose_run

__all__ = ["register"]


def _cmd_diagnose(args: argparse.Namespace) -> int:
    result = diagnose_run(args.run_dir, out_dir=args.out, draws=args.draws, group_draws=args.group_draws,
                          hdi_prob=args.hdi_prob, threshold=args.threshold, seed=args.seed,
                          plots=not args.no_plots, delta=args.delta)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format",
                           lambda v: f"{v:.4g}"):
        print(result.table.to_string())
    print(f"threshold {args.threshold:g}, HDI probability {args.hdi_prob:g}, "
          f"moments {result.table.attrs.get('moments', '?')}")
    where = args.out or f"{args.run_dir}/{DIAGNOSTICS_DIR}"
    print(f"wrote {len(result.paths)} files to {where} (diagnostics.nc, summary.csv, figures)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="posterior diagnostics of a Bayesian run: table, NetCDF, figures")
    p.add_argument("run_dir", help="run directory written by `pyrocompress train --out`")
    p.add_argument("--draws", type=int, default=0,
                   help="guide draws of every weight to store in diagnostics.nc (0: moments only)")
    p.add_argument("--group-draws", type=int, default=200,
                   help="draws of the group norms for their HDIs when --draws is 0 (0: none)")
    p.add_argument("--hdi-prob", type=float, default=0.95, help="probability of the HDIs, in (0, 1)")
    p.add_argument("--threshold", type=float, default=1e-2,
                   help="absolute norm below which a neuron / kernel counts as redundant")
    p.add_argument("--delta", type=float, default=1e-2, help="delta of the P(|w| < delta) score")
    p.add_argument("--seed", type=int, default=0, help="random seed of the draws")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/diagnostics)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.set_defaults(func=_cmd_diagnose)
