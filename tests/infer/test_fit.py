"""SVI training: conjugate correctness, generic Pyro guides, isolation, divergence, bad input."""
import math

import pytest
import torch
from torch import nn

import pyrocompress as pc
from pyrocompress.data import DataError, from_arrays
from pyrocompress.infer import DivergenceError, MeanFieldELBO, fit, fit_deterministic, make_guide
from pyrocompress.nn import BayesianModel, GaussianLikelihood, bayesianize


def test_svi_recovers_the_conjugate_linear_regression_posterior():
    """Orthogonal design: the mean-field family contains the exact posterior, so SVI must find it."""
    torch.manual_seed(0)
    n, d, noise, prior_scale = 64, 4, 0.5, 1.0
    q, _ = torch.linalg.qr(torch.randn(n, d))
    x = q * 3.0  # X^T X = 9 I
    w_true = torch.tensor([1.0, -2.0, 0.5, 0.0])
    y = x @ w_true + noise * torch.randn(n)
    precision = x.T @ x / noise**2 + torch.eye(d) / prior_scale**2
    post_cov = torch.linalg.inv(precision)
    post_mean = post_cov @ (x.T @ y) / noise**2

    net = bayesianize(nn.Sequential(nn.Linear(d, 1, bias=False)), prior=f"normal:{prior_scale}")
    model = BayesianModel(net, GaussianLikelihood(noise, dataset_size=n))
    guide = make_guide(model, init_scale=0.1)
    elbo = MeanFieldELBO("local_reparam", num_particles=8)
    opt = torch.optim.Adam(guide.parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1500, 0.1)
    for _ in range(4000):
        opt.zero_grad()
        elbo.differentiable_loss(model, guide, x, y).backward()
        opt.step()
        sched.step()
    loc = guide.loc_of("0.weight").detach()[0]
    scale = guide.scale_of("0.weight").detach()[0]
    assert torch.allclose(loc, post_mean, atol=0.02), (loc, post_mean)
    assert torch.allclose(scale, post_cov.diagonal().sqrt(), rtol=0.05), (scale, post_cov.diagonal().sqrt())


def test_fit_learns_digits_and_beats_chance(digits):
    torch.manual_seed(0)
    model = BayesianModel.from_module(pc.build_model("mlp", digits.input_shape, 10), 10)
    guide = make_guide(model)
    result = fit(model, guide, digits, epochs=3, seed=0)
    assert result.epochs == 3 and len(result.history) == 3
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert pc.evaluate(model, digits.test, guide)["accuracy"] > 0.8


@pytest.mark.parametrize("estimator", ["flipout", "weight_sampling"])
def test_other_estimators_train(digits, estimator):
    torch.manual_seed(0)
    model = BayesianModel.from_module(pc.build_model("mlp", digits.input_shape, 10, hidden=(64,)), 10)
    guide = make_guide(model)
    fit(model, guide, digits, epochs=3, estimator=estimator, seed=0)
    assert pc.evaluate(model, digits.test, guide)["accuracy"] > 0.7


def test_generic_pyro_elbo_and_autoguide_train(digits):
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    torch.manual_seed(0)
    model = BayesianModel.from_module(pc.build_model("mlp", digits.input_shape, 10, hidden=(32,)), 10,
                                      prior="normal:1.0")
    guide = AutoNormal(model, init_scale=1e-3)
    result = fit(model, guide, digits, epochs=4, elbo=Trace_ELBO(), seed=0, lr=1e-2)
    assert math.isfinite(result.history[-1]["loss"])
    assert pc.evaluate(model, digits.test, guide, num_samples=4)["accuracy"] > 0.5


def test_pyrocompress_guide_under_trace_mean_field_elbo_matches_lean_elbo(digits):
    """Same model and guide: Pyro's TraceMeanField_ELBO and the lean ELBO estimate the same loss."""
    from pyro.infer import TraceMeanField_ELBO

    torch.manual_seed(0)
    model = BayesianModel.from_module(pc.build_model("mlp", digits.input_shape, 10, hidden=(16,)), 10,
                                      dataset_size=len(digits.train))
    guide = make_guide(model, init_scale=0.05)
    x, y = digits.train.x[:256], digits.train.y[:256]
    lean = torch.stack([MeanFieldELBO().differentiable_loss(model, guide, x, y).detach() for _ in range(300)])
    pyro_elbo = TraceMeanField_ELBO()
    ref = torch.tensor([pyro_elbo.loss(model, guide, x, y) for _ in range(300)])
    se = (lean.var() / 300 + ref.var() / 300).sqrt()
    assert abs(float(lean.mean() - ref.mean())) < 5 * float(se) + 1e-3 * abs(float(ref.mean()))


def test_two_models_do_not_share_parameters(digits):
    import pyro

    torch.manual_seed(0)
    arch = pc.build_model("mlp", digits.input_shape, 10, hidden=(16,))
    m1 = BayesianModel.from_module(arch, 10)
    m2 = BayesianModel.from_module(arch, 10)
    g1, g2 = make_guide(m1), make_guide(m2)
    before = g2.loc_of("fc1.weight").detach().clone()
    fit(m1, g1, digits, epochs=1)
    assert torch.equal(g2.loc_of("fc1.weight"), before)
    assert not torch.equal(g1.loc_of("fc1.weight"), before)
    assert len(pyro.get_param_store().keys()) == 0


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_state(digits):
    torch.manual_seed(0)
    model = BayesianModel.from_module(pc.build_model("mlp", digits.input_shape, 10, hidden=(16,)), 10)
    guide = make_guide(model)
    saved = []
    calls = {"n": 0}

    def poison(model, guide):
        calls["n"] += 1
        if calls["n"] == 15:  # second epoch (11 steps per epoch)
            with torch.no_grad():
                guide.loc["fc1__weight"].fill_(float("nan"))

    with pytest.raises(DivergenceError, match=r"diverged at step 16 \(epoch 2\).*nll"):
        fit(model, guide, digits, epochs=3, step_hook=poison, checkpoint=lambda epoch: saved.append(epoch))
    assert torch.isfinite(guide.loc_of("fc1.weight")).all()  # restored to the end of epoch 1
    assert saved[-1] == 1


def test_bad_input_is_refused(digits):
    model = BayesianModel.from_module(pc.build_model("mlp", digits.input_shape, 10, hidden=(8,)), 10)
    guide = make_guide(model)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, guide, digits, epochs=0)
    with pytest.raises(ValueError, match="lr"):
        fit(model, guide, digits, epochs=1, lr=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, guide, digits, epochs=1, batch_size=0)
    wrong = from_arrays(torch.randn(50, 1, 5, 5), torch.randint(0, 10, (50,)), num_classes=10)
    with pytest.raises(DataError, match="does not fit"):
        fit(model, guide, wrong, epochs=1)
    other = BayesianModel.from_module(pc.build_model("mlp", digits.input_shape, 10, hidden=(9,)), 10)
    with pytest.raises(ValueError, match="does not belong"):
        fit(other, guide, digits, epochs=1)
    with pytest.raises(TypeError):
        fit_deterministic(model, digits, epochs=1)


def test_deterministic_twin_sees_the_same_data_order(digits):
    torch.manual_seed(0)
    a = pc.build_model("mlp", digits.input_shape, 10, hidden=(16,))
    b = pc.build_model("mlp", digits.input_shape, 10, hidden=(16,))
    b.load_state_dict(a.state_dict())
    fit_deterministic(a, digits, epochs=2, seed=3)
    fit_deterministic(b, digits, epochs=2, seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_history_records_the_epoch_sums_on_an_accelerator_too(digits):
    """On CUDA the loss is read every 50 steps only; the NLL sum and KL still reach the history, read once per
    epoch from the device (the loop is run with a CUDA device handle and CPU tensors: only its reads differ)."""
    import torch

    from pyrocompress.infer.fit import _train_loop

    torch.manual_seed(0)
    net = torch.nn.Linear(64, 10)
    data = digits
    steps = []

    def step_terms(xb, yb, kl_w):
        logits = net(xb.reshape(len(xb), -1))
        nll = torch.nn.functional.cross_entropy(logits, yb)
        kl = 0.5 * sum((p * p).sum() for p in net.parameters())
        steps.append((float(nll.detach()), float(kl.detach())))
        return nll + 1e-3 * kl_w * kl, {"nll": nll, "kl": kl}, logits

    def evaluate_val(split):
        return {"accuracy": 0.0, "nll": 0.0}

    for device in ("cpu", "cuda"):
        steps.clear()
        result = _train_loop(modules=[net], params=list(net.parameters()), step_terms=step_terms,
                             evaluate_val=evaluate_val, data=data, epochs=1, batch_size=128, lr=1e-2,
                             optimizer="adam", lr_schedule=None, seed=0, patience=None, clip_norm=None,
                             progress=False, kl_weight_at=lambda e: 1.0, on_checkpoint=None, desc="t",
                             device=torch.device(device))
        row = result.history[0]
        assert row["nll"] > 0 and row["kl"] > 0, device
        assert row["nll"] == pytest.approx(sum(n for n, _ in steps) / len(steps), rel=1e-12)
        assert row["kl"] == pytest.approx(steps[-1][1], rel=1e-6)
