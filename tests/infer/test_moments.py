"""Moment propagation: propagated means / variances against Monte Carlo, training, bad input.

Monte Carlo reference values use float64 and many draws; each tolerance is stated where
it is used, with the reason (MC error for exact rules, the approximation for the others).
"""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyrocompress.data import load_dataset
from pyrocompress.infer import fit
from pyrocompress.infer.guides import MeanFieldGuide
from pyrocompress.infer.moments import (MomentPropagationELBO, UnsupportedLayerError, bayes_layer_moments,
                                        is_moment_estimator, moment_options,
                                        gaussian_max_moments, maxpool_moments, propagate_moments, relu_moments)
from pyrocompress.infer.predictive import evaluate, predictive_estimator, predictive_probs
from pyrocompress.metrics import classification_metrics
from pyrocompress.nn.model import BayesianModel
from pyrocompress.nn.zoo import build_model


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _randomize(guide: MeanFieldGuide, seed: int, scale_range=(0.05, 0.4)) -> None:
    """Give the guide non-trivial locations and scales (per weight or per group)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key in guide.loc:
            guide.loc[key].copy_(0.5 * torch.randn(guide.loc[key].shape, generator=g))
            lo, hi = scale_range
            s = lo + (hi - lo) * torch.rand(guide.log_scale[key].shape, generator=g)
            guide.log_scale[key].copy_(torch.log(s))


def _sample_site(guide, site, n, g):
    loc, scale = guide.loc_of(site).detach(), guide.scale_of(site).detach()
    return loc + scale * torch.randn((n,) + tuple(loc.shape), generator=g)


def _check_moments(mean, var, samples, mean_tol_sd, var_rel_tol):
    """|mean - MC mean| <= mean_tol_sd * MC sd and |var / MC var - 1| <= var_rel_tol, element-wise."""
    mc_mean, mc_var = samples.mean(0), samples.var(0)
    mean_err = ((mean.detach() - mc_mean).abs() / mc_var.sqrt()).max()
    var_err = (var.detach() / mc_var - 1).abs().max()
    assert mean_err <= mean_tol_sd, f"mean off by {float(mean_err):.3g} MC sd (tolerance {mean_tol_sd})"
    assert var_err <= var_rel_tol, f"variance off by {float(var_err):.3g} relative (tolerance {var_rel_tol})"


def _single(layer: nn.Module, num_classes: int = 2) -> BayesianModel:
    return BayesianModel.from_module(nn.Sequential(OrderedDict(layer=layer)), num_classes)


@pytest.mark.parametrize("shared", [None, "group"])
def test_linear_moments_match_monte_carlo(shared):
    torch.manual_seed(0)
    model = _single(nn.Linear(6, 4), 4)
    guide = MeanFieldGuide(model, shared_scale=shared)
    _randomize(guide, 1)
    g = torch.Generator().manual_seed(2)
    mu_x = torch.randn(3, 6, generator=g)
    var_x = 0.1 + torch.rand(3, 6, generator=g)
    layer = dict(model.bayes_layers())["layer"]
    mean, var = bayes_layer_moments(layer, "layer", guide, mu_x, var_x)
    n = 200_000
    x = mu_x + var_x.sqrt() * torch.randn((n,) + mu_x.shape, generator=g)
    w = _sample_site(guide, "layer.weight", n, g)
    b = _sample_site(guide, "layer.bias", n, g)
    out = torch.einsum("sbi,soi->sbo", x, w) + b[:, None]
    # exact formula: only MC error (sd of the MC mean is sd / sqrt(2e5); of the variance ~0.5-1%)
    _check_moments(mean, var, out, mean_tol_sd=0.02, var_rel_tol=0.03)
    # a deterministic input (var None) is the same as zero variance
    m0, v0 = bayes_layer_moments(layer, "layer", guide, mu_x, None)
    m1, v1 = bayes_layer_moments(layer, "layer", guide, mu_x, torch.zeros_like(mu_x))
    assert torch.allclose(m0, m1) and torch.allclose(v0, v1)


@pytest.mark.parametrize("shared", [None, "group"])
def test_conv_moments_match_monte_carlo(shared):
    torch.manual_seed(0)
    model = _single(nn.Conv2d(2, 3, 3, padding=1), 3)
    guide = MeanFieldGuide(model, shared_scale=shared)
    _randomize(guide, 3)
    g = torch.Generator().manual_seed(4)
    mu_x = torch.randn(2, 2, 4, 4, generator=g)
    var_x = 0.1 + torch.rand(2, 2, 4, 4, generator=g)
    layer = dict(model.bayes_layers())["layer"]
    mean, var = bayes_layer_moments(layer, "layer", guide, mu_x, var_x)
    n = 30_000
    x = mu_x + var_x.sqrt() * torch.randn((n,) + mu_x.shape, generator=g)
    w = _sample_site(guide, "layer.weight", n, g)
    b = _sample_site(guide, "layer.bias", n, g)
    patches = F.unfold(x.reshape(n * 2, 2, 4, 4), 3, padding=1).reshape(n, 2, 18, 16)  # (S, B, C*k*k, L)
    out = torch.einsum("sbkl,sok->sbol", patches, w.reshape(n, 3, 18)) + b[:, None, :, None]
    # exact formula; MC error only (3e4 draws: variance within ~2-3%)
    _check_moments(mean, var, out.reshape(n, 2, 3, 4, 4), mean_tol_sd=0.03, var_rel_tol=0.05)


def test_plain_linear_and_conv_layers_propagate_input_variance():
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), flatten=nn.Flatten(), fc=nn.Linear(8, 3)))
    model = BayesianModel.from_module(net, 3, include=["fc"])  # conv stays deterministic
    guide = MeanFieldGuide(model)
    _randomize(guide, 5)
    conv = model.net.conv
    g = torch.Generator().manual_seed(6)
    mu_x, var_x = torch.randn(2, 1, 4, 4, generator=g), 0.2 + torch.rand(2, 1, 4, 4, generator=g)
    from pyrocompress.infer.moments import _layer_moments
    mean, var = _layer_moments("conv", conv, guide, mu_x, var_x, "exact", "clark")
    n = 100_000
    x = mu_x + var_x.sqrt() * torch.randn((n,) + mu_x.shape, generator=g)
    with torch.no_grad():
        out = F.conv2d(x.reshape(-1, 1, 4, 4), conv.weight.double(), conv.bias.double()).reshape(n, 2, 2, 2, 2)
    _check_moments(mean, var, out, mean_tol_sd=0.02, var_rel_tol=0.03)


def test_relu_exact_moments_match_monte_carlo_and_taylor_is_first_order():
    g = torch.Generator().manual_seed(7)
    mean = torch.tensor([-1.5, -1.0, -0.2, 0.0, 0.3, 1.0, 4.0])
    var = torch.tensor([1.0, 0.5, 2.0, 1.0, 0.1, 1.0, 0.5])
    m, v = relu_moments(mean, var, "exact")
    z = torch.relu(mean + var.sqrt() * torch.randn(400_000, 7, generator=g))
    # exact rectified-Gaussian moments: MC error only
    _check_moments(m, v, z, mean_tol_sd=0.01, var_rel_tol=0.03)
    mt, vt = relu_moments(mean, var, "taylor")
    assert torch.equal(mt, torch.relu(mean))
    assert torch.equal(vt, var * (mean > 0))
    # limits: no variance -> the deterministic ReLU; far from zero -> identity / zero
    m0, v0 = relu_moments(torch.tensor([-2.0, 3.0]), torch.zeros(2), "exact")
    assert torch.allclose(m0, torch.tensor([0.0, 3.0])) and torch.allclose(v0, torch.zeros(2))
    m1, v1 = relu_moments(torch.tensor([50.0, -50.0]), torch.tensor([1.0, 1.0]), "exact")
    assert torch.allclose(m1, torch.tensor([50.0, 0.0])) and torch.allclose(v1, torch.tensor([1.0, 0.0]))


def test_relu_gradients_are_finite_at_zero_variance():
    mean = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    var = torch.zeros(3, requires_grad=True)
    m, v = relu_moments(mean, var, "exact")
    (m.sum() + v.sum()).backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(var.grad).all()


def test_max_moments_clark_and_pooling_against_monte_carlo():
    g = torch.Generator().manual_seed(8)
    m1, v1 = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 0.2, 3.0, 1e-6])
    m2, v2 = torch.tensor([0.0, -1.0, 0.0, 0.4]), torch.tensor([2.0, 0.5, 0.1, 1e-6])
    m, v = gaussian_max_moments(m1, v1, m2, v2)
    n = 400_000
    z = torch.maximum(m1 + v1.sqrt() * torch.randn(n, 4, generator=g), m2 + v2.sqrt() * torch.randn(n, 4, generator=g))
    # Clark's formulas are exact for the max of two independent Gaussians: MC error only
    _check_moments(m, v, z, mean_tol_sd=0.01, var_rel_tol=0.03)

    mean = torch.randn(2, 3, 4, 4, generator=g)
    var = 0.05 + torch.rand(2, 3, 4, 4, generator=g)
    pm, pv = maxpool_moments(mean, var, 2, "clark")
    x = mean + var.sqrt() * torch.randn((100_000,) + mean.shape, generator=g)
    pooled = F.max_pool2d(x.reshape(-1, 3, 4, 4), 2).reshape(100_000, 2, 3, 2, 2)
    # pairwise Clark over 4 elements treats the intermediate maxima as Gaussian: an approximation.
    # Observed over random windows: mean within 0.03 sd, variance within 19%; tolerances 0.1 sd and 30%.
    _check_moments(pm, pv, pooled, mean_tol_sd=0.1, var_rel_tol=0.3)
    am, av = maxpool_moments(mean, var, 2, "argmax")
    assert torch.equal(am, F.max_pool2d(mean, 2))
    idx = F.max_pool2d(mean, 2, return_indices=True)[1]
    assert torch.equal(av, var.flatten(2).gather(2, idx.flatten(2)).reshape(av.shape))
    # without input variance the pooling is the ordinary one
    dm, dv = maxpool_moments(mean, None, 2)
    assert dv is None and torch.equal(dm, F.max_pool2d(mean, 2))


@pytest.mark.parametrize("shared", [None, "group"])
def test_kernelnet_chain_matches_monte_carlo(shared):
    torch.manual_seed(0)
    arch = build_model("kernelnet", (1, 10, 10), 3, kernels=4, kernel_size=3)  # conv, relu, pool, flatten, fc
    model = BayesianModel.from_module(arch, 3)
    guide = MeanFieldGuide(model, shared_scale=shared)
    _randomize(guide, 9, scale_range=(0.05, 0.2))
    g = torch.Generator().manual_seed(10)
    x = torch.randn(3, 1, 10, 10, generator=g)
    mean, var = propagate_moments(model, guide, x, relu="exact", pool="clark")
    n = 40_000
    wc, bc = _sample_site(guide, "conv.weight", n, g), _sample_site(guide, "conv.bias", n, g)
    wf, bf = _sample_site(guide, "fc.weight", n, g), _sample_site(guide, "fc.bias", n, g)
    patches = F.unfold(x, 3)  # (B, 9, 64)
    h = torch.einsum("bkl,sok->sbol", patches, wc.reshape(n, 4, 9)) + bc[:, None, :, None]
    h = F.max_pool2d(torch.relu(h).reshape(n * 3, 4, 8, 8), 2).reshape(n, 3, 64)
    out = torch.einsum("sbi,soi->sbo", h, wf) + bf[:, None]
    # Through a chain, units that share a kernel are correlated and moment propagation keeps
    # only variances (diagonal): means stay close, variances are somewhat underestimated.
    # The pairwise Clark max-pool adds its own error. Observed over guides and seeds: means within
    # 0.12 MC sd, variance ratios 0.83-1.27; tolerances: 0.25 sd and ratios in [0.6, 1.5].
    mc_mean, mc_var = out.mean(0), out.var(0)
    assert ((mean.detach() - mc_mean).abs() / mc_var.sqrt()).max() < 0.25
    ratio = var.detach() / mc_var
    assert ratio.min() > 0.6 and ratio.max() < 1.5, ratio


def test_unsupported_layer_and_bad_modes_give_clear_errors():
    net = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(4, 3), act=nn.Tanh(), fc2=nn.Linear(3, 2)))
    model = BayesianModel.from_module(net, 2)
    guide = MeanFieldGuide(model)
    x = torch.randn(5, 1, 2, 2)
    with pytest.raises(UnsupportedLayerError, match=r"'act'.*Tanh.*supported layers"):
        propagate_moments(model, guide, x)
    with pytest.raises(UnsupportedLayerError, match="act"):
        MomentPropagationELBO().loss_terms(model, guide, x, torch.zeros(5, dtype=torch.long))
    pool_net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 2), pool=nn.MaxPool2d(3, stride=1),
                                         flatten=nn.Flatten(), fc=nn.Linear(2 * 4 * 4, 2)))
    pool_model = BayesianModel.from_module(pool_net, 2)
    with pytest.raises(UnsupportedLayerError, match="'pool'.*non-overlapping"):
        propagate_moments(pool_model, MeanFieldGuide(pool_model), torch.randn(2, 1, 7, 7))
    with pytest.raises(ValueError, match="relu mode.*exact.*taylor"):
        propagate_moments(model, guide, x, relu="sigmoid")
    with pytest.raises(ValueError, match="likelihood.*sampled"):
        MomentPropagationELBO(likelihood="softmax")


def test_moment_propagation_elbo_is_a_pyro_elbo_with_gradients():
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(5,)), 3, dataset_size=100)
    guide = MeanFieldGuide(model, init_scale=1e-8)
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    for lik in ("sampled", "probit", "gaussian"):
        loss = MomentPropagationELBO(likelihood=lik)(model, guide)(x, y)  # Pyro's module-style interface
        guide.zero_grad()
        loss.backward()
        grads = [p.grad for p in guide.parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    # with (almost) no weight uncertainty the logit means are the posterior-mean network's logits
    nll, kl, logits = MomentPropagationELBO().loss_terms(model, guide, x, y, return_logits=True)
    from pyrocompress.infer.guides import posterior_mean_network
    assert torch.allclose(logits, posterior_mean_network(model, guide).double()(x), atol=1e-5)
    assert torch.allclose(nll, F.cross_entropy(logits, y, reduction="sum") * 100 / 8, rtol=1e-4)


def test_moment_propagation_learns_digits():
    torch.set_default_dtype(torch.float32)
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    arch = build_model("kernelnet", data.input_shape, 10, kernels=8, kernel_size=3)
    model = BayesianModel.from_module(arch, 10, dataset_size=len(data.train))
    guide = MeanFieldGuide(model, shared_scale="group")  # the eVI kernel-shared variance
    result = fit(model, guide, data, epochs=4, batch_size=64, lr=1e-2, estimator="moment_propagation",
                 seed=0, device="cpu")
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0], losses
    probs = predictive_probs(model, guide, data.test.x, num_samples=8, estimator="moment_propagation")
    acc = classification_metrics(probs, data.test.y)["accuracy"]
    assert acc > 0.8, acc  # chance is 0.1
    assert torch.allclose(probs.sum(1), torch.ones(len(data.test)), atol=1e-5)


def test_estimator_name_selects_the_moment_rules_through_fit_and_predict():
    opts = moment_options("moment_propagation:relu=taylor,pool=argmax,likelihood=probit,logit_samples=4")
    assert opts == {"relu": "taylor", "pool": "argmax", "likelihood": "probit", "logit_samples": 4}
    assert moment_options("moment_propagation") == {}
    assert is_moment_estimator("Moment-Propagation:relu=taylor") and not is_moment_estimator("local_reparam")
    elbo = MomentPropagationELBO.from_name("moment_propagation:pool=argmax", kl_weight=0.5)
    assert (elbo.relu, elbo.pool, elbo.kl_weight) == ("exact", "argmax", 0.5)
    for bad, match in (("moment_propagation:relu=sigmoid", "relu.*exact.*taylor"),
                       ("moment_propagation:pooling=argmax", "bad moment-propagation option.*pooling"),
                       ("moment_propagation:relu", "key=value"),
                       ("moment_propagation:logit_samples=0", "logit_samples must be a positive integer"),
                       ("local_reparam", "not a moment-propagation estimator")):
        with pytest.raises(ValueError, match=match):
            moment_options(bad)

    # the paper's first-order rules train through fit() and predict with the same rules
    torch.set_default_dtype(torch.float32)  # the data are float32 (the fixture restores the default)
    data = load_dataset("digits", seed=0, limit=400)
    torch.manual_seed(0)
    arch = build_model("kernelnet", data.input_shape, 10, kernels=4, kernel_size=3)
    model = BayesianModel.from_module(arch, 10, dataset_size=len(data.train))
    guide = MeanFieldGuide(model, shared_scale="group")
    name = "moment_propagation:relu=taylor,pool=argmax"
    fit(model, guide, data, epochs=1, batch_size=64, estimator=name, seed=0, device="cpu")
    x = data.test.x[:16]
    mean, var = propagate_moments(model, guide, x, relu="taylor", pool="argmax")
    exact_mean, _ = propagate_moments(model, guide, x)
    assert not torch.allclose(mean, exact_mean)  # the two rule sets differ, so the check below is meaningful
    torch.manual_seed(1)
    probs = predictive_probs(model, guide, x, num_samples=4, estimator=name)
    torch.manual_seed(1)
    eps = torch.randn((4,) + tuple(mean.shape))
    expected = F.softmax(mean + var.clamp_min(0).sqrt() * eps, -1).mean(0)
    assert torch.allclose(probs, expected, atol=1e-5)
    with pytest.raises(ValueError, match="bad moment-propagation option"):
        fit(model, guide, data, epochs=1, estimator="moment_propagation:foo=1", device="cpu")
    # a moment-propagation run is evaluated with its own rules; sampling estimators with weight sampling
    assert predictive_estimator(name) == name and predictive_estimator("flipout") == "weight_sampling"
    torch.manual_seed(2)
    via_evaluate = evaluate(model, data.test, guide, num_samples=4, estimator=predictive_estimator(name))
    torch.manual_seed(2)
    direct = classification_metrics(predictive_probs(model, guide, data.test.x, num_samples=4, estimator=name),
                                    data.test.y)
    assert via_evaluate == direct


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_moments_on_gpu_match_cpu():
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model("kernelnet", (1, 8, 8), 3, kernels=2, kernel_size=3), 3)
    guide = MeanFieldGuide(model, shared_scale="group")
    _randomize(guide, 11)
    x = torch.randn(4, 1, 8, 8)
    m_cpu, v_cpu = propagate_moments(model, guide, x)
    model.cuda()
    guide.cuda()
    m_gpu, v_gpu = propagate_moments(model, guide, x.cuda())
    assert torch.allclose(m_gpu.cpu(), m_cpu, atol=1e-8) and torch.allclose(v_gpu.cpu(), v_cpu, atol=1e-8)


def _autograd_relu(m, v):
    """The rectified-Gaussian moments written out for autograd (the reference for the fused ops)."""
    s = torch.sqrt(v)
    a = m / s
    cdf, pdf = torch.special.ndtr(a), torch.exp(-0.5 * a * a) / (2 * torch.pi) ** 0.5
    mean = m * cdf + s * pdf
    second = (m * m + v) * cdf + m * s * pdf
    return mean, second - mean * mean


def test_fused_relu_and_max_gradients_match_autograd_and_finite_differences():
    g = torch.Generator().manual_seed(3)
    m = (2 * torch.randn(50, generator=g)).requires_grad_()
    v = (0.05 + 2 * torch.rand(50, generator=g)).requires_grad_()
    mean, var = relu_moments(m, v, "exact")
    ref_mean, ref_var = _autograd_relu(m, v)
    assert torch.allclose(mean, ref_mean, atol=1e-10) and torch.allclose(var, ref_var, atol=1e-9)
    w1, w2 = torch.randn(50, generator=g), torch.randn(50, generator=g)
    grads = torch.autograd.grad((w1 * mean + w2 * var).sum(), (m, v))
    ref = torch.autograd.grad((w1 * ref_mean + w2 * ref_var).sum(), (m, v))
    for got, want in zip(grads, ref):
        assert torch.allclose(got, want, atol=1e-8), (got - want).abs().max()
    assert torch.autograd.gradcheck(lambda a, b: relu_moments(a, b, "exact"), (m, v))

    m1, m2 = (torch.randn(40, generator=g) for _ in range(2))
    v1, v2 = (0.05 + torch.rand(40, generator=g) for _ in range(2))
    inputs = tuple(t.clone().requires_grad_() for t in (m1, v1, m2, v2))
    mean, var = gaussian_max_moments(*inputs)
    # reference: max = z2 + relu(z1 - z2), Var = v2 (1 - 2 Phi(a)) + Var[relu(d)] (Stein's lemma)
    rm, rv = _autograd_relu(inputs[0] - inputs[2], inputs[1] + inputs[3])
    a = (inputs[0] - inputs[2]) / torch.sqrt(inputs[1] + inputs[3])
    ref_mean, ref_var = inputs[2] + rm, inputs[3] * (1 - 2 * torch.special.ndtr(a)) + rv
    assert torch.allclose(mean, ref_mean, atol=1e-10) and torch.allclose(var, ref_var, atol=1e-9)
    grads = torch.autograd.grad((w1[:40] * mean + w2[:40] * var).sum(), inputs)
    ref = torch.autograd.grad((w1[:40] * ref_mean + w2[:40] * ref_var).sum(), inputs)
    for got, want in zip(grads, ref):
        assert torch.allclose(got, want, atol=1e-8), (got - want).abs().max()
    assert torch.autograd.gradcheck(gaussian_max_moments, inputs)
