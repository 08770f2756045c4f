"""``diagnose``: everything the CLI writes for one run, as one function (also what the benchmark times)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import xarray as xr

from ..infer.fit import check_scales_moved
from ..infer.guides import is_posterior_guide
from ..runs import RunError, atomic_write_text, load_run
from . import _arviz
from ._posterior import check_draws, posterior_view
from .convert import to_inference_data
from .plots import plot_diagnostics
from .norm_draws import check_hdi_prob
from .redundancy import score_dataset
from .summary import _check_threshold, group_summary, summary

__all__ = ["Diagnosis", "diagnose", "diagnose_run", "NETCDF_NAME", "DIAGNOSTICS_DIR"]

NETCDF_NAME = "diagnostics.nc"
DIAGNOSTICS_DIR = "diagnostics"


@dataclass
class Diagnosis:
    """What :func:`diagnose` computed: the per-layer table, the InferenceData, written files."""

    table: pd.DataFrame
    idata: object
    groups: Optional[pd.DataFrame] = None
    paths: list[Path] = field(default_factory=list)


def _in_name(var: str) -> str:
    """``"fc1.snr"`` at the input-channel level -> ``"fc1.in_snr"`` (as ``in_norm`` in the posterior)."""
    layer, _, score = var.rpartition(".")
    return f"{layer}.in_{score}"


def diagnose(model, guide, out_dir: Optional[str | Path] = None, draws: int = 0, group_draws: int = 200,
             hdi_prob: float = 0.95, threshold: float = 1e-2, seed: int = 0, plots: bool = True,
             delta: float = 1e-2) -> Diagnosis:
    """Diagnose a posterior: per-layer table, InferenceData (moments, norm draws, group and
    input-channel scores in a ``redundancy`` group: ``"<layer>.<score>"`` per output group,
    ``"<layer>.in_<score>"`` per input channel) and, with ``out_dir``, write
    ``diagnostics.nc``, ``summary.csv``, ``group_summary.csv`` and the figures there."""
    check_hdi_prob(hdi_prob)
    threshold = _check_threshold(threshold)
    check_draws(draws, "draws", allow_zero=True)
    check_draws(group_draws, "group_draws", allow_zero=True)
    untrained = check_scales_moved(guide, "diagnose") if is_posterior_guide(guide) else None
    view = posterior_view(model, guide, seed=seed)
    idata = to_inference_data(model, guide, draws=draws, group_draws=group_draws, seed=seed, view=view)
    post = _arviz.get_group(idata, "posterior")
    norm_draws = None
    if post is not None:
        norm_draws = post[[v for v in post.data_vars if str(v).endswith("norm")]]
    scores = [score_dataset(model, guide, level=level, hdi_prob=hdi_prob, delta=delta, draws=0, seed=seed,
                            view=view, norm_draws=norm_draws) for level in ("group", "in_channel")]
    group_level, in_level = scores
    in_level = in_level.rename({v: _in_name(str(v)) for v in in_level.data_vars})
    redundancy = xr.merge([group_level, in_level], combine_attrs="drop_conflicts")
    redundancy.attrs.update({"convention": "importance: higher = keep, lower = redundant", "hdi_prob": hdi_prob,
                             "delta": delta})
    if untrained:
        redundancy.attrs["warning"] = untrained
    idata.add_groups(redundancy=redundancy)
    table = summary(model, guide, threshold=threshold, hdi_prob=hdi_prob, draws=0, seed=seed, view=view,
                    norm_draws=norm_draws)
    groups = group_summary(idata, hdi_prob) if norm_draws is not None else None
    result = Diagnosis(table, idata, groups)
    if out_dir is not None:
        out_dir = Path(out_dir)
        result.paths.append(_arviz.to_netcdf(idata, out_dir / NETCDF_NAME))
        atomic_write_text(out_dir / "summary.csv", table.to_csv())
        result.paths.append(out_dir / "summary.csv")
        if groups is not None:
            atomic_write_text(out_dir / "group_summary.csv", groups.to_csv())
            result.paths.append(out_dir / "group_summary.csv")
        if plots:
            result.paths += plot_diagnostics(view, out_dir, norm_draws=norm_draws, hdi_prob=hdi_prob,
                                             threshold=threshold)
    return result


def diagnose_run(run_dir: str | Path, out_dir: Optional[str | Path] = None, **options) -> Diagnosis:
    """:func:`diagnose` of a run directory; files go to ``RUN_DIR/diagnostics/`` unless ``out_dir``.

    Deterministic runs have no posterior: they get a clear error (magnitude pruning of a
    plain network lives in the baselines, not here).
    """
    run = load_run(run_dir)
    if not run.is_bayesian:
        raise RunError(f"{run_dir} is a deterministic run: it has no posterior to diagnose; "
                       "train a Bayesian run (pyrocompress train without --deterministic)")
    target = Path(out_dir) if out_dir is not None else Path(run_dir) / DIAGNOSTICS_DIR
    return diagnose(run.model, run.guide, out_dir=target, **options)
