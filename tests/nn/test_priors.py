"""Closed-form KLs against Monte Carlo; prior specs and their errors."""
import math

import pytest
import torch
import pyro.distributions as dist

from pyrocompress.nn.priors import LogUniformPrior, NormalPrior, ScaleMixturePrior, make_prior, resolve_prior


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


def test_log_uniform_kl_approximation_tracks_the_exact_kl_up_to_a_constant():
    """KL(N(t, a t^2) || 1/|w|) = const - 0.5 log a + E log|1 + sqrt(a) e| (Molchanov et al. 2017, eq. 7);
    their approximation must differ from it by one constant over the whole range of log alpha."""
    prior = LogUniformPrior()
    log_alpha = torch.linspace(-6.0, 6.0, 25, dtype=torch.float64)
    # E log|1 + sqrt(alpha) e| by Gauss-Hermite quadrature (probabilists' weights) on a fine grid
    e = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    density = torch.exp(-0.5 * e**2) / math.sqrt(2 * math.pi)
    de = float(e[1] - e[0])
    expected_log = torch.stack([(density * torch.log(torch.abs(1 + torch.exp(0.5 * la) * e) + 1e-300)).sum() * de
                                for la in log_alpha])
    exact_up_to_const = -0.5 * log_alpha + expected_log
    loc = torch.ones_like(log_alpha)
    approx = prior.kl_elementwise(loc, torch.exp(0.5 * log_alpha))
    gap = approx - exact_up_to_const
    assert float(gap.max() - gap.min()) < 0.03, gap
    # the KL falls as alpha grows (the prior pulls towards pure noise) and a deleted weight costs nothing
    assert bool((approx[1:] < approx[:-1]).all())
    assert float(prior.kl_elementwise(torch.zeros(3), torch.full((3,), 1e-8)).abs().max()) < 1e-3
    # the deletion rule: log alpha > 3 <=> importance -log alpha below -3
    rule = prior.deletion_rule()
    assert rule.score == "log_alpha" and rule.threshold == -3.0
    # the model's density is the improper 1/|w|: it has a log_prob but no samples
    d = prior.distribution(torch.Size([2, 3]), loc)
    w = torch.tensor([[1.0, -2.0, 0.5], [4.0, 1.0, 1.0]])
    assert float(d.log_prob(w)) == pytest.approx(-math.log(1 * 2 * 0.5 * 4))
    with pytest.raises(NotImplementedError, match="improper"):
        d.sample()


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
    assert isinstance(make_prior({"name": "log_uniform"}), LogUniformPrior)
    assert make_prior("log_uniform:2").threshold == 2.0
    with pytest.raises(ValueError, match="valid priors"):
        make_prior("laplace")
    with pytest.raises(ValueError, match="positive"):
        make_prior("normal:-1")
    spec = {"conv1": "normal:0.5", "fc": "log_uniform", "default": "scale_mixture"}
    assert resolve_prior(spec, "conv1", "conv").scale == 0.5
    assert isinstance(resolve_prior(spec, "fc2", "linear"), LogUniformPrior)
    assert isinstance(resolve_prior(spec, "conv2", "conv"), ScaleMixturePrior)
    # "output" picks the network's last layer, before patterns and prefixes
    spec = {"default": "group_horseshoe", "output": "log_uniform", "fc": "normal"}
    assert isinstance(resolve_prior(spec, "fc3", "linear", is_output=True), LogUniformPrior)
    assert resolve_prior(spec, "fc2", "linear").name == "normal"
    assert resolve_prior(spec, "conv1", "conv").name == "group_horseshoe"


@pytest.mark.parametrize("prior", [NormalPrior(0.3), LogUniformPrior()])
def test_kl_from_the_log_scale_equals_the_kl_from_the_scale_with_the_same_gradients(prior):
    """The guide passes its log-scales to the KL (fewer passes per step): same value, same gradients."""
    torch.manual_seed(0)
    loc = torch.randn(50, dtype=torch.float64)
    loc[:3] = 0.0  # deleted weights
    log_scale = (torch.rand(50, dtype=torch.float64) * 6 - 8).requires_grad_()
    loc.requires_grad_()
    a = prior.kl(loc, log_scale.exp())
    ga = torch.autograd.grad(a, (loc, log_scale))
    b = prior.kl_log_scale(loc, log_scale, log_scale.exp())
    gb = torch.autograd.grad(b, (loc, log_scale))
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-12)
    elementwise = prior.kl_elementwise(loc, log_scale.exp()).sum().detach()
    assert float(a.detach()) == pytest.approx(float(elementwise), rel=1e-12)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)
