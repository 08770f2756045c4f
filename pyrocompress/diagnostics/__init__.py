"""Posterior diagnostics: redundancy scores, ArviZ InferenceData with named dims, summaries, plots.

Every ArviZ call goes through :mod:`pyrocompress.diagnostics._arviz` (tested with
``arviz>=0.20,<1``). See docs/diagnostics.md.
"""
from .agreement import jaccard, run_agreement, spearman
from .convert import RUN_DIM, combine_runs, moments_dataset, to_inference_data
from ._posterior import PosteriorView, posterior_view
from .naming import LEVELS, dim_prefix, site_dims
from .plots import plot_diagnostics
from .redundancy import DEFAULT_SCORES, norm_draws_dataset, norm_hdi_scores, score_dataset
from .report import Diagnosis, diagnose, diagnose_run
from .scores import SCORES, get_score, group_scores, posterior_moments, reduce_level, score_names, weight_scores
from .summary import group_summary, summary

__all__ = [
    "SCORES", "get_score", "group_scores", "posterior_moments", "score_names", "weight_scores", "reduce_level",
    "LEVELS", "dim_prefix", "site_dims", "DEFAULT_SCORES", "score_dataset", "norm_draws_dataset",
    "norm_hdi_scores", "to_inference_data", "combine_runs", "moments_dataset", "RUN_DIM", "summary",
    "group_summary", "run_agreement", "PosteriorView", "posterior_view", "plot_diagnostics", "spearman", "jaccard", "Diagnosis", "diagnose", "diagnose_run",
]
