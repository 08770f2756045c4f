"""Posterior diagnostics: redundancy scores, ArviZ InferenceData with named dims, summaries, plots."""
from .scores import SCORES, get_score, group_scores, posterior_moments, score_names, weight_scores

__all__ = ["SCORES", "get_score", "group_scores", "posterior_moments", "score_names", "weight_scores"]
