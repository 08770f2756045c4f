"""The posterior predictive: same distribution as the S-fold repetition it replaced, shared weight
draws for weight sampling, per-example draws for local reparameterization, seeding, budgets."""
import ast
from pathlib import Path

import pyro
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyrocompress.infer import fit, make_guide
from pyrocompress.infer.estimators import FrozenDraw, WeightSampling, make_estimator
from pyrocompress.infer.predictive import (DEFAULT_MEMORY_BUDGET, evaluate, network_probs, predictive_batch_size,
                                           predictive_estimator, predictive_probs, resolve_eval_estimator)
from pyrocompress.nn import BayesianModel


def _model(conv: bool, init_scale: float = 0.4, seed: int = 0):
    torch.manual_seed(seed)
    if conv:
        net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 3))
        x = torch.randn(6, 1, 6, 6)
    else:
        net = nn.Sequential(nn.Flatten(), nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
        x = torch.randn(6, 5)
    model = BayesianModel.from_module(net, 3)
    guide = make_guide(model, init_scale=init_scale)
    return model, guide, x


@torch.no_grad()
def _old_path(model, guide, x, num_samples, estimator):
    """The predictive before issue 17: inputs repeated S times (per-example noise) or S forwards."""
    handler = make_estimator(estimator, guide)
    if handler.per_example_noise:
        with handler:
            logits = model.net(x.repeat((num_samples,) + (1,) * (x.dim() - 1)))
        return F.softmax(logits, -1).reshape(num_samples, x.shape[0], -1)
    out = []
    for _ in range(num_samples):
        with handler:
            out.append(F.softmax(model.net(x), -1))
    return torch.stack(out)


def _agree_within_mc_error(a: torch.Tensor, b: torch.Tensor) -> None:
    """(S, N, C) samples of two predictives: their means agree within 5 standard errors."""
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    diff = (a.mean(0) - b.mean(0)).abs()
    assert torch.all(diff < 5 * se + 1e-4), float((diff / (se + 1e-12)).max())


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("estimator", ["weight_sampling", "local_reparam", "flipout"])
def test_new_predictive_has_the_old_paths_distribution(conv, estimator):
    model, guide, x = _model(conv)
    s = 800
    pyro.set_rng_seed(1)
    new = predictive_probs(model, guide, x, num_samples=s, estimator=estimator, return_samples=True,
                           batch_size=4)  # two batches: draws must not depend on the batching
    # flipout's old path shared one perturbation among all S rows of an example (one batch): its rows
    # were not independent draws, so it is compared with weight sampling, whose marginals it shares
    old = _old_path(model, guide, x, s, "weight_sampling" if estimator == "flipout" else estimator)
    assert new.shape == old.shape == (s, x.shape[0], 3)
    _agree_within_mc_error(new, old)
    mean = predictive_probs(model, guide, x, num_samples=s, estimator=estimator)
    assert torch.allclose(mean.sum(1), torch.ones(x.shape[0]), atol=1e-5)
    assert torch.all((mean - new.mean(0)).abs() < 0.05)


def test_for_linear_layers_weight_sampling_is_the_local_reparameterization_predictive():
    """The auto predictive of a sampling-trained guide changed from local reparameterization to weight
    sampling: for Linear layers every example's predictive distribution is the same."""
    model, guide, x = _model(conv=False)
    pyro.set_rng_seed(2)
    ws = predictive_probs(model, guide, x, num_samples=800, estimator="weight_sampling", return_samples=True)
    old_lrt = _old_path(model, guide, x, 800, "local_reparam")
    _agree_within_mc_error(ws, old_lrt)


def test_weight_sampling_shares_one_weight_set_across_batches_and_lrt_draws_per_example():
    model, guide, x = _model(conv=True)
    twice = torch.cat([x, x])  # every example twice, the copies in different batches
    pyro.set_rng_seed(0)
    ws = predictive_probs(model, guide, twice, num_samples=5, estimator="weight_sampling", return_samples=True,
                          batch_size=4)
    assert torch.equal(ws[:, :6], ws[:, 6:])  # one weight set per sample, the same for every batch
    assert not torch.allclose(ws[0], ws[1])  # ... and a new one per sample
    pyro.set_rng_seed(0)
    lrt = predictive_probs(model, guide, twice, num_samples=5, estimator="local_reparam", return_samples=True,
                           batch_size=4)
    assert not torch.allclose(lrt[:, :6], lrt[:, 6:])  # independent draws per example
    assert not torch.allclose(lrt[0], lrt[1])  # and per pass (the first layer's kept moments get new noise)
    pyro.set_rng_seed(0)
    one_batch = predictive_probs(model, guide, twice, num_samples=5, estimator="local_reparam", return_samples=True)
    assert not torch.allclose(one_batch[:, :6], one_batch[:, 6:])


def test_lrt_draws_are_independent_between_examples():
    model, guide, x = _model(conv=False, init_scale=1.0)
    same = x[:1].expand(2, -1).contiguous()
    pyro.set_rng_seed(0)
    lrt = predictive_probs(model, guide, same, num_samples=1000, estimator="local_reparam", return_samples=True)
    corr = torch.corrcoef(torch.stack([lrt[:, 0, 0], lrt[:, 1, 0]]))[0, 1]
    assert abs(float(corr)) < 0.1
    pyro.set_rng_seed(0)
    ws = predictive_probs(model, guide, same, num_samples=50, estimator="weight_sampling", return_samples=True)
    assert torch.allclose(ws[:, 0], ws[:, 1], atol=1e-6)


@pytest.mark.parametrize("estimator", ["weight_sampling", "local_reparam", "flipout", "moment_propagation", "mean"])
def test_seeding_makes_the_predictive_reproducible(estimator):
    model, guide, x = _model(conv=True)
    runs = []
    for _ in range(2):
        pyro.set_rng_seed(3)
        runs.append(predictive_probs(model, guide, x, num_samples=4, estimator=estimator))
    assert torch.equal(runs[0], runs[1])
    if estimator == "weight_sampling":  # weight draws do not depend on how the inputs are batched
        pyro.set_rng_seed(3)
        assert torch.allclose(predictive_probs(model, guide, x, num_samples=4, estimator=estimator, batch_size=1),
                              runs[0], atol=1e-6)


def test_mean_mode_return_samples_and_the_autoguide_path():
    from pyro.infer.autoguide import AutoNormal

    model, guide, x = _model(conv=False)
    mean = predictive_probs(model, guide, x, mode="mean")
    assert torch.allclose(mean, predictive_probs(model, guide, x, num_samples=3, estimator="mean"))
    assert predictive_probs(model, guide, x, mode="mean", return_samples=True).shape == (1, 6, 3)
    assert predictive_probs(model, guide, x, num_samples=3, estimator="mean", return_samples=True).shape == (3, 6, 3)
    auto = AutoNormal(model, init_scale=0.3)
    auto(x, torch.zeros(x.shape[0], dtype=torch.long))  # create its parameters, as fit() does
    twice = torch.cat([x, x])
    pyro.set_rng_seed(0)
    probs = predictive_probs(model, auto, twice, num_samples=4, return_samples=True, batch_size=5)
    assert probs.shape == (4, 12, 3)
    assert torch.allclose(probs[:, :6], probs[:, 6:])  # one guide draw per sample, replayed on every batch
    assert not torch.allclose(probs[0], probs[1])


def test_frozen_draw_keeps_each_layers_draw_until_redraw_and_draws_through_weight_sampling(monkeypatch):
    model, guide, x = _model(conv=False)
    calls = []
    real = WeightSampling.draw
    monkeypatch.setattr(WeightSampling, "draw", lambda self, layer: calls.append(layer) or real(self, layer))
    frozen = FrozenDraw(guide)
    with torch.no_grad():
        with frozen:
            a = model.net(x)
        with frozen:
            b = model.net(x[:2])
        assert torch.equal(a[:2], b) and len(calls) == 2  # two layers, one draw each
        frozen.redraw()
        with frozen:
            c = model.net(x)
    assert len(calls) == 4 and not torch.equal(a, c)


def test_options_are_validated_with_clear_errors():
    model, guide, x = _model(conv=False)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            predictive_probs(model, guide, x, num_samples=bad)
    for bad in (0, -5, 2.0):
        with pytest.raises(ValueError, match="memory_budget must be a positive integer"):
            predictive_probs(model, guide, x, memory_budget=bad)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predictive_probs(model, guide, x, batch_size=0)
    with pytest.raises(ValueError, match="mode must be"):
        predictive_probs(model, guide, x, mode="median")
    with pytest.raises(ValueError, match="valid estimators"):
        predictive_probs(model, guide, x, estimator="nope")
    with pytest.raises(ValueError, match="at least one input"):
        predictive_probs(model, guide, x[:0])


def test_batch_size_follows_the_memory_budget():
    assert predictive_batch_size(1000, 4, 10_000, memory_budget=4_000_000) == 1000
    assert predictive_batch_size(1000, 4, 10_000, memory_budget=4_000_000, workspace=4.0) == 250
    assert predictive_batch_size(1000, 4, 10_000, memory_budget=4_000_000, fixed_elements=1000) == 500
    assert predictive_batch_size(1000, 4, 300, memory_budget=4_000_000) == 300
    assert predictive_batch_size(1000, 4, 10_000, memory_budget=4_000_000, cap=64) == 64
    assert predictive_batch_size(10 ** 9, 4, 10, memory_budget=1) == 1  # never below one example
    assert predictive_batch_size(1000, 4, 10 ** 9) == DEFAULT_MEMORY_BUDGET // 4000
    # a tiny budget changes the batching, not the weight-sampling result
    model, guide, x = _model(conv=True)
    pyro.set_rng_seed(0)
    a = predictive_probs(model, guide, x, num_samples=3, estimator="weight_sampling", memory_budget=1)
    pyro.set_rng_seed(0)
    b = predictive_probs(model, guide, x, num_samples=3, estimator="weight_sampling")
    assert torch.allclose(a, b, atol=1e-6)


def test_batch_size_counts_a_convolutions_unfolded_input():
    """A CPU convolution may unfold its input (in_channels x kernel area x output positions per
    example): LeNet-5's second convolution unfolds 500 x 64 = 32,000 elements, more than any
    activation, and the batch is sized from it (an unfolded buffer past glibc's mmap threshold is
    mapped afresh every batch: kernel time)."""
    from pyrocompress.infer.predictive import _leaf_sizes
    from pyrocompress.nn.zoo import build_model

    net = build_model("lenet5", (1, 28, 28), 10)
    x1 = torch.zeros(1, 1, 28, 28)
    assert max(_leaf_sizes(net, net, x1)) == 20 * 5 * 5 * 8 * 8
    model = BayesianModel.from_module(build_model("lenet5", (1, 28, 28), 10), 10)
    guide = make_guide(model)

    def probe(xb):
        with FrozenDraw(guide):
            return model.net(xb)
    assert max(_leaf_sizes(model.net, probe, x1)) == 20 * 5 * 5 * 8 * 8  # Bayesian conv layers alike
    dense = nn.Sequential(nn.Flatten(), nn.Linear(784, 300))
    assert max(_leaf_sizes(dense, dense, x1)) == 2 * 784  # no convolution: activations only (the Flatten)


def test_network_probs_and_evaluate_of_a_plain_network(digits):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = digits.test.x
    whole = F.softmax(net(x), -1).detach()
    assert torch.allclose(network_probs(net, x), whole, atol=1e-6)
    assert torch.allclose(network_probs(net, x, memory_budget=1000), whole, atol=1e-6)
    assert torch.allclose(network_probs(net, x, batch_size=7), whole, atol=1e-6)
    assert set(evaluate(net, digits.test)) >= {"accuracy", "nll", "ece"}


def test_auto_estimator_names():
    assert predictive_estimator("local_reparam") == "weight_sampling"
    assert predictive_estimator("weight_sampling") == "weight_sampling"
    assert predictive_estimator("moment_propagation:relu=taylor") == "moment_propagation:relu=taylor"
    assert resolve_eval_estimator("auto", "flipout") == "weight_sampling"
    assert resolve_eval_estimator(None, None) == "weight_sampling"
    assert resolve_eval_estimator("local_reparam", "weight_sampling") == "local_reparam"


def test_fit_records_validation_cost_and_validation_does_not_change_training(digits):
    results = []
    for val_samples in (1, 3):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        model = BayesianModel.from_module(net, 10)
        guide = make_guide(model)
        result = fit(model, guide, digits, epochs=2, estimator="weight_sampling", seed=0, val_samples=val_samples,
                     device="cpu")
        results.append((guide.loc_of("1.weight").detach().clone(), result))
    (w1, r1), (w3, r3) = results
    assert torch.equal(w1, w3)  # validation draws from its own random stream
    for rec in r3.history:
        assert rec["val_samples"] == 3 and rec["val_seconds"] >= 0 and 0 <= rec["val_share"] < 1
    with pytest.raises(ValueError, match="val_samples must be a positive integer"):
        fit(model, guide, digits, epochs=1, val_samples=0)


def test_metrics_does_not_import_infer():
    source = (Path(__file__).parents[2] / "pyrocompress" / "metrics.py").read_text()
    modules = [node.module or "" for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)]
    modules += [a.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import) for a in node.names]
    assert not any("infer" in m for m in modules), modules


def test_lrt_keeps_the_first_layers_moments_across_passes_even_behind_a_flatten(monkeypatch):
    """kernelnet and the MLP reach their first Bayesian layer through views (Flatten): still one
    mean and one variance product per batch, not per sample."""
    from pyrocompress.nn.layers import BayesLinear

    model, guide, x = _model(conv=False)  # Flatten, then the first Linear
    calls = []
    real = BayesLinear.op
    monkeypatch.setattr(BayesLinear, "op", lambda self, *a: calls.append(self) or real(self, *a))
    predictive_probs(model, guide, x, num_samples=5, estimator="local_reparam")
    first = model.net[1]
    # one product in the shape probe (posterior mean), then mean and variance once for all 5 passes
    assert sum(1 for layer in calls if layer is first) == 3
