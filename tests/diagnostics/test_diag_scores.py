"""Scores against hand-computed values on a tiny network with set locs and scales."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import pyro
import pyro.distributions as dist
import torch

from pyrocompress.diagnostics import (get_score, group_scores, score_dataset, score_names, summary,
                                      weight_scores)

Z95 = 1.959963984540054


def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_weight_level_scores_match_hand_values(tiny):
    model, guide, loc, scale = tiny
    ds = score_dataset(model, guide, ["snr", "prob_nonzero", "kl", "hdi_nonzero", "magnitude"], level="weight",
                       delta=0.1, hdi_prob=0.95)
    assert ds["fc.snr"].dims == ("fc_out", "fc_in")
    # SNR |mu| / sigma: 0.5 / 0.25 = 2, 0.2 / 0.1 = 2, 0 / 0.5 = 0; 1/0.5 = 2, 0.1/0.2 = 0.5, 0.3/0.1 = 3
    np.testing.assert_allclose(ds["fc.snr"].values, [[2.0, 2.0, 0.0], [2.0, 0.5, 3.0]], rtol=1e-5)
    # P(|w| < 0.1) for N(0.5, 0.25^2): Phi((0.1-0.5)/0.25) - Phi((-0.1-0.5)/0.25)
    p_in = phi(-1.6) - phi(-2.4)
    assert ds["fc.prob_nonzero"].values[0, 0] == pytest.approx(1 - p_in, abs=1e-6)
    # N(0, 0.5^2): P(|w| < 0.1) = 2 Phi(0.2) - 1
    assert ds["fc.prob_nonzero"].values[0, 2] == pytest.approx(1 - (2 * phi(0.2) - 1), abs=1e-6)
    # KL(N(m, s^2) || N(0, 1)) = 0.5 (s^2 + m^2 - 1 - log s^2)
    for (i, j) in [(0, 0), (1, 2), (0, 2)]:
        m, s = float(loc[i, j]), float(scale[i, j])
        assert ds["fc.kl"].values[i, j] == pytest.approx(0.5 * (s * s + m * m - 1 - math.log(s * s)), rel=1e-4)
    # the 95% HDI of N(m, s^2) excludes zero iff |m| > 1.96 s
    expected = (loc.abs() > Z95 * scale).float().numpy()
    np.testing.assert_array_equal(ds["fc.hdi_nonzero"].values, expected)
    np.testing.assert_allclose(ds["fc.magnitude"].values, loc.abs().numpy(), rtol=1e-6)


def test_group_and_in_channel_levels(tiny):
    model, guide, loc, scale = tiny
    g = score_dataset(model, guide, ["norm", "snr", "min_snr", "hdi_nonzero", "kl"], level="group")
    assert g["fc.norm"].dims == ("fc_out",)
    np.testing.assert_allclose(g["fc.norm"].values, [math.sqrt(0.29), math.sqrt(1.1)], rtol=1e-5)
    np.testing.assert_allclose(g["fc.snr"].values, [4 / 3, 5.5 / 3], rtol=1e-5)
    np.testing.assert_allclose(g["fc.min_snr"].values, [0.0, 0.5], rtol=1e-5)
    np.testing.assert_allclose(g["fc.hdi_nonzero"].values, [2 / 3, 2 / 3], rtol=1e-5)
    per_weight = score_dataset(model, guide, "kl", level="weight")["fc.kl"].values
    np.testing.assert_allclose(g["fc.kl"].values, per_weight.sum(1), rtol=1e-5)
    c = score_dataset(model, guide, ["norm", "min_snr"], level="in_channel")
    assert c["fc.norm"].dims == ("fc_in",)
    np.testing.assert_allclose(c["fc.norm"].values, [math.sqrt(1.25), math.sqrt(0.05), 0.3], rtol=1e-5)
    np.testing.assert_allclose(c["fc.min_snr"].values, [2.0, 0.5, 0.0], rtol=1e-5)
    # the registry functions agree with the xarray interface
    assert torch.allclose(group_scores(model, guide, "norm")["fc"], torch.from_numpy(g["fc.norm"].values))
    assert torch.allclose(weight_scores(model, guide, "snr")["fc"],
                          torch.tensor([[2.0, 2.0, 0.0], [2.0, 0.5, 3.0]]), rtol=1e-5)


def test_norm_hdi_from_draws(tiny):
    model, guide, loc, scale = tiny
    ds = score_dataset(model, guide, "norm_hdi_low", level="group", draws=4000, seed=3, hdi_prob=0.9)
    low = ds["fc.norm_hdi_low"].values
    # Monte Carlo reference: 5% quantile-ish lower end of ||w|| (HDI of a skewed positive variable is lower)
    g = torch.Generator().manual_seed(0)
    w = loc + scale * torch.randn((20000,) + tuple(loc.shape), generator=g)
    norms = w.norm(dim=2)
    assert (low > 0).all()
    for i in range(2):
        q = torch.quantile(norms[:, i], torch.tensor([0.0, 0.1])).numpy()
        assert q[0] <= low[i] <= q[1]
    again = score_dataset(model, guide, "norm_hdi_low", level="group", draws=4000, seed=3, hdi_prob=0.9)
    np.testing.assert_array_equal(again["fc.norm_hdi_low"].values, low)
    assert torch.allclose(group_scores(model, guide, "norm_hdi_low", draws=4000, seed=3, hdi_prob=0.9)["fc"],
                          torch.from_numpy(low))


def test_summary_table(tiny):
    model, guide, loc, scale = tiny
    table = summary(model, guide, threshold=0.6, hdi_prob=0.95, draws=0)
    row = table.loc["fc"]
    assert row["params"] == 8
    assert row["mean_abs_mu"] == pytest.approx(float(loc.abs().mean()), rel=1e-6)
    assert row["mean_sigma"] == pytest.approx(float(scale.mean()), rel=1e-6)
    assert row["frac_snr_lt_1"] == pytest.approx(2 / 6)  # SNR 0 and 0.5
    assert row["frac_hdi_zero"] == pytest.approx(2 / 6)
    assert row["groups"] == 2 and row["groups_norm_lt_t"] == 1  # norms 0.539 and 1.049
    assert "groups_hdi_lt_t" not in table.columns
    with_draws = summary(model, guide, threshold=0.6, draws=300)
    assert with_draws.loc["fc", "groups_hdi_lt_t"] >= 1


def test_bad_input(tiny):
    model, guide, *_ = tiny
    with pytest.raises(ValueError, match="valid scores"):
        score_dataset(model, guide, "snrr")
    with pytest.raises(ValueError, match="valid scores"):
        get_score("bogus")
    for p in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="hdi_prob"):
            score_dataset(model, guide, "hdi", hdi_prob=p)
    with pytest.raises(ValueError, match="draws"):
        score_dataset(model, guide, "norm_hdi_low", level="group", draws=0)
    with pytest.raises(ValueError, match="draws"):
        score_dataset(model, guide, "norm_hdi_low", level="group", draws=-5)
    with pytest.raises(ValueError, match="valid levels"):
        score_dataset(model, guide, "snr", level="layer")
    with pytest.raises(ValueError, match="per group"):
        weight_scores(model, guide, "norm_hdi_low")
    with pytest.raises(ValueError, match="threshold"):
        summary(model, guide, threshold=-1)
    assert {"snr", "norm", "kl", "prob_nonzero", "hdi_nonzero", "min_snr", "norm_hdi_low"} <= set(score_names())


class PlainGuide:
    """A Pyro guide with no loc_of/scale_of: the diagnostics must fall back to draws."""

    def __init__(self, moments):
        self.moments = moments

    def __call__(self, *args, **kwargs):
        for site, (loc, scale) in self.moments.items():
            pyro.sample(site, dist.Normal(loc, scale).to_event(loc.dim()))


def test_guide_without_scales_falls_back_to_draws(tiny):
    model, guide, loc, scale = tiny
    plain = PlainGuide({s: (guide.loc_of(s).detach(), guide.scale_of(s).detach()) for s in guide.site_names()})
    with pytest.warns(UserWarning, match="draws"):
        ds = score_dataset(model, plain, ["snr", "prob_nonzero"], level="weight", delta=0.1, draws=0)
    exact = score_dataset(model, guide, ["snr", "prob_nonzero"], level="weight", delta=0.1)
    assert ds.attrs["moments"].startswith("estimated_from_")
    # 200 draws: the SNR estimate has a standard error of about (1 + SNR / sqrt(2)) / sqrt(200) ~ 0.07-0.22,
    # the Monte Carlo probabilities one of at most 0.035: compare within about 4 standard errors
    np.testing.assert_allclose(ds["fc.snr"].values, exact["fc.snr"].values, rtol=0.2, atol=0.3)
    np.testing.assert_allclose(ds["fc.prob_nonzero"].values, exact["fc.prob_nonzero"].values, atol=0.15)


def test_one_registry_for_posterior_scores_and_plain_importances(tiny):
    from pyrocompress.diagnostics import SCORES, get_score, weight_scores

    model, guide, loc, scale = tiny
    assert {n for n, s in SCORES.items() if not s.needs_posterior} == {"magnitude", "l1", "random"}
    assert get_score("norm").name == "magnitude" and get_score("L2").name == "magnitude"
    assert not get_score("l1").ranks_posterior and get_score("snr").needs_posterior
    la = weight_scores(model, guide, "log_alpha")["fc"]
    torch.testing.assert_close(la, 2 * (loc.abs().log() - scale.log()))   # -log(sigma^2 / mu^2)
    assert get_score("log_alpha").reduction == "mean"
    assert la[0, 2] == -math.inf  # a weight at exactly zero has the lowest importance
