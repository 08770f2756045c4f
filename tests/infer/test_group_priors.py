"""Group priors (the group horseshoe): explicit scale sites in the model, closed-form KLs, unit scales
in every estimator, structured deletion and run round trips."""
import math

import pytest
import torch
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import Trace_ELBO

import pyrocompress as pc
from pyrocompress.infer import LocalReparameterization, PosteriorMean, WeightSampling, make_guide
from pyrocompress.infer.elbo import MeanFieldELBO
from pyrocompress.infer.guides import posterior_mean_network
from pyrocompress.infer.moments import propagate_moments
from pyrocompress.infer.scales import lognormal_kl
from pyrocompress.nn import BayesianModel
from pyrocompress.nn.priors import GroupHorseshoePrior
from pyrocompress.prune.masks import Masks, layer_shapes
from pyrocompress.prune.shrink import shrink


GROUP_PRIORS = ["group_horseshoe", "group_log_uniform"]


def _model(hidden=(6,), classes=3, prior="group_horseshoe"):
    torch.manual_seed(0)
    net = pc.build_model("mlp", (1, 4, 4), classes, hidden=hidden)
    return BayesianModel.from_module(net, classes, prior=prior, dataset_size=100)


@pytest.mark.parametrize("prior", [dist.Gamma(torch.tensor(0.5), torch.tensor(3.0)),
                                   dist.InverseGamma(torch.tensor(0.5), torch.tensor(2.0))])
def test_lognormal_kl_matches_monte_carlo(prior):
    torch.manual_seed(0)
    loc, log_scale = torch.tensor([-1.0, 0.3]), torch.tensor([-0.5, -1.5])
    q = dist.LogNormal(loc, log_scale.exp())
    x = q.sample((400_000,))
    mc = (q.log_prob(x) - prior.log_prob(x)).mean(0)
    torch.testing.assert_close(lognormal_kl(loc, log_scale, prior), mc, rtol=0.02, atol=0.01)


def test_scale_posterior_kl_equals_the_sum_of_the_sites_lognormal_kls():
    """LogNormalScales.kl reads the priors' constants once; it must equal lognormal_kl of every site, gradients too."""
    from pyrocompress.infer.scales import LogNormalScales

    prior = GroupHorseshoePrior(global_scale=1e-3)
    scales = LogNormalScales(prior, 7, 0.05, 0.1)
    torch.manual_seed(0)
    with torch.no_grad():
        for suffix in scales.kinds:
            scales.loc[suffix].add_(torch.randn_like(scales.loc[suffix]))
            scales.log_scale[suffix].add_(0.3 * torch.randn_like(scales.log_scale[suffix]))
    like = torch.zeros(())
    reference = sum(lognormal_kl(scales.loc[s], scales.log_scale[s], prior.scale_site_distribution(s, 7, like)).sum()
                    for s in scales.kinds)
    fast = scales.kl(like)
    assert torch.allclose(fast, reference, rtol=1e-5)
    params = list(scales.parameters())
    for a, b in zip(torch.autograd.grad(fast, params), torch.autograd.grad(reference, params)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gamma_times_inverse_gamma_is_the_half_cauchy():
    """sqrt(a b), a ~ Gamma(1/2, rate 1/tau^2), b ~ InvGamma(1/2, 1): the horseshoe's C+(0, tau)."""
    prior, like = GroupHorseshoePrior(global_scale=0.3), torch.zeros(())
    n = 200_000
    a = prior.scale_site_distribution("global_scale_a", 1, like).sample((n,))
    b = prior.scale_site_distribution("global_scale_b", 1, like).sample((n,))
    s = torch.sqrt(a * b)
    probs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    expected = dist.HalfCauchy(torch.tensor(0.3)).icdf(probs)
    torch.testing.assert_close(torch.quantile(s, probs), expected, rtol=0.03, atol=0.0)


def test_model_has_explicit_scale_sites_and_weights_depend_on_them():
    model = _model()
    x = torch.randn(5, 1, 4, 4)
    trace = poutine.trace(model).get_trace(x)
    sites = [n for n, node in trace.nodes.items() if node["type"] == "sample"]
    for layer in ("fc1", "fc2"):
        for suffix in ("global_scale_a", "global_scale_b", "group_scale_a", "group_scale_b"):
            assert f"{layer}.{suffix}" in sites
    node = trace.nodes["fc1.weight"]
    z = GroupHorseshoePrior().group_scale({s: trace.nodes[f"fc1.{s}"]["value"]
                                           for s in ("global_scale_a", "global_scale_b", "group_scale_a",
                                                     "group_scale_b")})
    torch.testing.assert_close(node["fn"].base_dist.scale[:, 0], z)
    # the bias belongs to its unit's group
    torch.testing.assert_close(trace.nodes["fc1.bias"]["fn"].base_dist.scale, z)
    with pytest.raises(ValueError, match="bias"):
        pc.nn.BayesLinear(3, 2, prior="group_horseshoe", bias_prior="normal")


def test_lean_kl_equals_the_monte_carlo_kl_of_the_full_model_and_guide():
    """The lean ELBO's KL (Normal part + closed-form scale part) is KL(q || p) over every site."""
    model = _model()
    guide = make_guide(model, init_scale=0.05)
    with torch.no_grad():
        for post in guide.group_scales.values():
            for p in post.log_scale.values():
                p.fill_(math.log(0.3))
    x, y = torch.randn(4, 1, 4, 4), torch.randint(0, 3, (4,))
    _, kl = MeanFieldELBO().loss_terms(model, guide, x, y)
    kl = kl.detach()
    estimates = []
    for _ in range(3000):
        guide_tr = poutine.trace(guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
        lq = sum(node["fn"].log_prob(node["value"]).sum() for name, node in guide_tr.nodes.items()
                 if node["type"] == "sample")
        lp = sum(node["fn"].log_prob(node["value"]).sum() for name, node in model_tr.nodes.items()
                 if node["type"] == "sample" and name != "obs")
        estimates.append(float((lq - lp).detach()))
    est = torch.tensor(estimates, dtype=torch.float64)
    assert abs(float(est.mean()) - float(kl)) < 4 * float(est.std()) / math.sqrt(len(est)) + 0.5, (float(kl), float(est.mean()))


@pytest.mark.parametrize("prior", GROUP_PRIORS)
def test_pyro_svi_runs_on_the_model_and_guide(prior):
    model = _model(prior=prior)
    guide = make_guide(model)
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    loss = Trace_ELBO().differentiable_loss(model, guide, x, y)
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert all(p.grad is not None for p in guide.group_scales.parameters())


def _randomize(guide, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key in guide.loc:
            guide.loc[key].copy_(torch.randn(guide.loc[key].shape, generator=g))
            guide.log_scale[key].copy_(torch.log(0.05 + 0.3 * torch.rand(guide.log_scale[key].shape, generator=g)))
        for post in guide.group_scales.values():
            for name, p in post.named_parameters():
                if name.startswith("log_scale"):
                    p.copy_(torch.log(0.1 + 0.3 * torch.rand(p.shape, generator=g)))
                else:
                    p.add_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("prior", GROUP_PRIORS)
@pytest.mark.parametrize("estimator", [LocalReparameterization, WeightSampling])
def test_estimators_draw_the_weights_of_the_posterior_moments(estimator, prior):
    """Pre-activation mean and variance per example equal those of weights drawn from the guide."""
    torch.manual_seed(1)
    model = _model(prior=prior)
    guide = make_guide(model)
    _randomize(guide)
    x = torch.randn(3, 16)
    layer = model.net.fc1
    # reference: draw (z, v) from the guide's Pyro program and apply the layer
    ref = []
    for _ in range(20_000 if estimator is LocalReparameterization else 4000):
        tr = poutine.trace(guide).get_trace()
        ref.append(torch.nn.functional.linear(x, tr.nodes["fc1.weight"]["value"], tr.nodes["fc1.bias"]["value"]))
    ref = torch.stack(ref)
    reps = 20_000 if estimator is LocalReparameterization else 4000
    with torch.no_grad():
        if estimator is LocalReparameterization:
            with estimator(guide):
                got = layer(x.repeat(reps, 1)).reshape(reps, 3, -1)
        else:
            outs = []
            for _ in range(reps):
                with estimator(guide):
                    outs.append(layer(x))
            got = torch.stack(outs)
    torch.testing.assert_close(got.mean(0), ref.mean(0), rtol=0.1, atol=0.08)
    torch.testing.assert_close(got.std(0), ref.std(0), rtol=0.1, atol=0.08)
    # the posterior mean network is the estimators' mean and the guide's loc_of
    with PosteriorMean(guide):
        mean_out = layer(x)
    torch.testing.assert_close(mean_out, ref.mean(0), rtol=0.1, atol=0.08)


@pytest.mark.parametrize("prior", GROUP_PRIORS)
def test_moment_propagation_includes_the_unit_scales(prior):
    torch.manual_seed(2)
    model = _model(hidden=(), prior=prior)
    guide = make_guide(model)
    _randomize(guide, seed=3)
    x = torch.randn(4, 1, 4, 4)
    mean, var = propagate_moments(model, guide, x)
    with torch.no_grad(), LocalReparameterization(guide):
        draws = torch.stack([model.net(x) for _ in range(20_000)])
    torch.testing.assert_close(mean, draws.mean(0), rtol=0.05, atol=0.05)
    torch.testing.assert_close(var, draws.var(0), rtol=0.08, atol=0.05)


@pytest.mark.parametrize("prior", GROUP_PRIORS)
def test_deleted_units_shrink_exactly_and_keep_their_scale_posteriors(prior):
    model = _model(hidden=(6, 5), prior=prior)
    guide = make_guide(model)
    _randomize(guide, seed=4)
    keep = {"fc1": torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)}
    masks = Masks.from_units(keep, layer_shapes(model))
    result = shrink(model, guide, masks=masks)
    assert result.plan.sizes_after["fc1"] == 4
    post, small = guide.group_scales_of("fc1"), result.guide.group_scales_of("fc1")
    torch.testing.assert_close(small.mean(), post.mean()[keep["fc1"]])
    x = torch.randn(7, 1, 4, 4)
    masked_model, masked_guide = model, guide
    masks.apply(masked_model, masked_guide)
    with PosteriorMean(masked_guide):
        expected = masked_model.net(x)
    with PosteriorMean(result.guide):
        got = result.model.net(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(posterior_mean_network(result.model, result.guide)(x), expected, rtol=1e-5, atol=1e-5)


def test_fit_learns_the_unit_scales_and_runs_round_trip(tmp_path, digits):
    from pyrocompress.runs import load_run
    from pyrocompress.training import TrainConfig, train

    run = train(TrainConfig(dataset="digits", model="mlp", model_options={"hidden": [32]}, epochs=4, lr=0.01,
                            prior="group_horseshoe", eval_samples=4, device="cpu"), data=digits, out=tmp_path / "r")
    loaded = load_run(tmp_path / "r")
    assert loaded.model.net.fc1.prior.name == "group_horseshoe"
    torch.testing.assert_close(loaded.guide.group_scales_of("fc1").mean(), run.guide.group_scales_of("fc1").mean())
    torch.testing.assert_close(loaded.guide.loc_of("fc1.weight"), run.guide.loc_of("fc1.weight"))
    assert run.metrics["accuracy"] > 0.75


def test_group_log_uniform_deletes_units_by_their_dropout_rate():
    model = _model(prior="group_log_uniform")
    guide = make_guide(model)
    post = guide.group_scales_of("fc1")
    rule = model.net.fc1.prior.deletion_rule()
    assert rule.score == "unit_log_alpha" and rule.threshold == -3.0
    with torch.no_grad():
        post.log_scale.copy_(torch.log(post.loc.abs() * torch.tensor([0.1, 10.0, 0.1, 10.0, 0.1, 0.1])))
    la = post.log_alpha().detach()
    assert bool((la[[1, 3]] > 3).all()) and bool((la[[0, 2, 4, 5]] < 3).all())
    # a unit with a huge dropout rate costs (almost) no KL; a precise one costs more
    kl = model.net.fc1.prior.scale_kl(post.loc, post.log_scale.exp()).detach()
    assert float(kl[1]) < float(kl[0])
