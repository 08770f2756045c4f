"""Closed-form KLs against Monte Carlo; prior specs and their errors."""
import math

import pytest
import torch
import pyro.distributions as dist

from pyrocompress.nn.priors import GroupARDPrior, NormalPrior, ScaleMixturePrior, make_prior, resolve_prior


def _mc_kl(prior_dist, loc, scale, n=200_000):
    q = dist.Normal(loc, scale)
    w = q.sample((n,))
    return (q.log_prob(w).reshape(n, -1).sum(-1) - prior_dist.log_prob(w)).mean()


@pytest.mark.parametrize("prior_scale", [1.0, 0.1])
def test_normal_kl_matches_monte_carlo(prior_scale):
    torch.manual_seed(0)
    loc, scale = torch.randn(2, 3) * 0.5, torch.rand(2, 3) * 0.3 + 0.05
    prior = NormalPrior(prior_scale)
    exact = prior.kl(loc, scale)
    mc = _mc_kl(prior.distribution(loc.shape, loc), loc, scale)
    assert torch.allclose(exact, mc, rtol=0.02, atol=0.05), (exact, mc)
    assert torch.allclose(prior.kl_elementwise(loc, scale).sum(), exact, rtol=1e-5)


def test_group_ard_kl_matches_monte_carlo_at_the_fitted_variances():
    torch.manual_seed(1)
    loc, scale = torch.randn(4, 6) * 0.3, torch.rand(4, 6) * 0.2 + 0.05
    prior = GroupARDPrior()
    alpha = prior.group_variance(loc, scale)
    exact = prior.kl(loc, scale)
    mc = _mc_kl(prior.distribution(loc.shape, loc, alpha), loc, scale)
    assert torch.allclose(exact, mc, rtol=0.02, atol=0.05), (exact, mc)
    assert torch.allclose(prior.kl_elementwise(loc, scale).sum(), exact, rtol=1e-4)
    # the fitted variances minimise the KL: any other choice gives a larger one
    other = dist.Normal(0.0, (alpha * 1.5).sqrt()[:, None].expand_as(loc)).to_event(2)
    assert _mc_kl(other, loc, scale) > exact


def test_scale_mixture_kl_is_an_unbiased_monte_carlo_estimate():
    torch.manual_seed(2)
    loc, scale = torch.randn(50) * 0.1, torch.full((50,), 0.05)
    prior = ScaleMixturePrior()
    estimates = torch.stack([prior.kl(loc, scale) for _ in range(2000)])
    reference = _mc_kl(prior.distribution(loc.shape, loc), loc, scale, n=100_000)
    assert abs(float(estimates.mean() - reference)) < 4 * float(estimates.std()) / math.sqrt(2000) + 0.05
    assert not prior.closed_form_kl


def test_prior_specs_and_errors():
    assert make_prior("normal:0.1").scale == 0.1
    assert isinstance(make_prior({"name": "group_ard"}), GroupARDPrior)
    with pytest.raises(ValueError, match="valid priors"):
        make_prior("laplace")
    with pytest.raises(ValueError, match="positive"):
        make_prior("normal:-1")
    spec = {"conv1": "normal:0.5", "fc": "group_ard", "default": "scale_mixture"}
    assert resolve_prior(spec, "conv1", "conv").scale == 0.5
    assert isinstance(resolve_prior(spec, "fc2", "linear"), GroupARDPrior)
    assert isinstance(resolve_prior(spec, "conv2", "conv"), ScaleMixturePrior)
