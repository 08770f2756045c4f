"""Posterior diagnostics: the importance registry, ArviZ InferenceData with named dims, summaries, plots,
and the NUTS reference posterior's convergence and comparison with a guide.

Every ArviZ call goes through :mod:`pyrocompress.diagnostics._arviz` (tested with
``arviz>=0.20,<1``). See docs/diagnostics.md.
"""
from ._posterior import PosteriorView, posterior_view
from .agreement import jaccard, run_agreement, spearman
from .convergence import ESS_PER_CHAIN, RHAT_THRESHOLD, convergence
from .convert import RUN_DIM, combine_runs, moments_dataset, to_inference_data
from .naming import LEVELS, dim_prefix, site_dims
from .norm_draws import norm_draws_dataset, norm_hdi_scores
from .plots import plot_diagnostics
from .redundancy import DEFAULT_SCORES, score_dataset
from .reference import ReferencePosterior, compare_to_guide, judge_draws, model_fingerprint, reference_posterior
from .reference_io import ReferenceMismatchError, load_reference, write_reference
from .report import Diagnosis, diagnose, diagnose_run
from .scores import SCORES, Score, get_score, group_scores, posterior_moments, reduce_level, score_names, weight_scores
from .summary import group_summary, summary

__all__ = [
    "SCORES", "Score", "get_score", "group_scores", "posterior_moments", "score_names", "weight_scores",
    "reduce_level", "LEVELS", "dim_prefix", "site_dims", "DEFAULT_SCORES", "score_dataset", "norm_draws_dataset",
    "norm_hdi_scores", "to_inference_data", "combine_runs", "moments_dataset", "RUN_DIM", "summary",
    "group_summary", "run_agreement", "PosteriorView", "posterior_view", "plot_diagnostics", "spearman", "jaccard",
    "Diagnosis", "diagnose", "diagnose_run", "convergence", "RHAT_THRESHOLD", "ESS_PER_CHAIN",
    "reference_posterior", "ReferencePosterior", "compare_to_guide", "judge_draws", "model_fingerprint",
    "write_reference", "load_reference", "ReferenceMismatchError",
]
