"""Hidden-unit relabelling: which layers are exchangeable, permuted draws mapped back to one copy
of the symmetry without changing what they predict, and the reference posterior's use of it."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pyrocompress.infer.guides import MeanFieldGuide
from pyrocompress.diagnostics import reference_posterior
from pyrocompress.infer.nuts import pointwise_log_likelihood
from pyrocompress.infer.relabel import align_hidden_units, permutation_groups
from pyrocompress.nn.model import BayesianModel
from pyrocompress.nn.priors import NormalPrior
from pyrocompress.nn.zoo import build_model


def _model(name, shape, classes, **options):
    torch.manual_seed(0)
    return BayesianModel.from_module(build_model(name, shape, classes, **options), classes)


def test_permutation_groups_follow_the_architecture():
    mlp = _model("mlp", (1, 8, 8), 10, hidden=(3, 2))
    assert [(g.producer, g.consumer, g.units, g.block) for g in permutation_groups(mlp)] == [
        ("fc1", "fc2", 3, 1), ("fc2", "fc3", 2, 1)]
    lenet = _model("lenet5", (1, 28, 28), 10)
    assert [(g.producer, g.consumer, g.units, g.block) for g in permutation_groups(lenet)] == [
        ("conv1", "conv2", 20, 1), ("conv2", "fc1", 50, 16), ("fc1", "fc2", 500, 1)]
    # no hidden Bayesian layer: nothing to permute
    assert permutation_groups(_model("mlp", (1, 8, 8), 10, hidden=())) == []
    # latent variables per unit in the prior (group scales) tell the units apart
    @dataclass(repr=False)
    class PerUnitLatents(NormalPrior):
        per_unit_latents: bool = True

    grouped = BayesianModel.from_module(build_model("mlp", (1, 8, 8), 10, hidden=(3,)), 10, prior=PerUnitLatents())
    assert permutation_groups(grouped) == []


def _permuted_draws(model, guide, chains=2, draws=25, noise=0.02, seed=0):
    """Draws near the guide's means, each with its hidden units shuffled by a random permutation."""
    gen = torch.Generator().manual_seed(seed)
    groups = permutation_groups(model)
    out = {s: [] for s in model.site_names()}
    perms = []
    for _ in range(chains * draws):
        with torch.no_grad():
            draw = {s: guide.loc_of(s).detach().clone() for s in model.site_names()}
        chosen = {}
        for g in groups:
            p = torch.randperm(g.units, generator=gen)
            chosen[g.producer] = p
            draw[f"{g.producer}.weight"] = draw[f"{g.producer}.weight"][p]
            draw[f"{g.producer}.bias"] = draw[f"{g.producer}.bias"][p]
            w = draw[f"{g.consumer}.weight"]
            draw[f"{g.consumer}.weight"] = w.reshape(w.shape[0], g.units, -1)[:, p].reshape(w.shape)
        perms.append(chosen)
        for s, v in draw.items():
            out[s].append(v + noise * torch.randn(v.shape, generator=gen))
    return {s: torch.stack(v).reshape((chains, draws) + tuple(v[0].shape)) for s, v in out.items()}, perms


@pytest.mark.parametrize("name,shape,options", [("mlp", (1, 8, 8), {"hidden": (4, 3)}),
                                                ("kernelnet", (1, 12, 12), {"kernels": 3})])
def test_alignment_undoes_permutations_and_keeps_the_function(name, shape, options):
    model = _model(name, shape, 3, **options)
    guide = MeanFieldGuide(model, init_scale=0.01)
    with torch.no_grad():  # units far enough apart that the nearest copy is the true one
        for s in model.site_names():
            guide.loc_of(s).mul_(3.0)
    samples, _ = _permuted_draws(model, guide)
    aligned, report = align_hidden_units(samples, model, target="guide", guide=guide)
    # every draw is back in the guide's copy: within the noise of the guide's means
    for s in model.site_names():
        err = (aligned[s] - guide.loc_of(s).detach()).abs().max()
        assert err < 0.1, (s, float(err))
    assert all(0.5 < g["permuted_fraction"] <= 1.0 for g in report["groups"])
    assert len(report["groups"][0]["permuted_fraction_per_chain"]) == 2
    # a permutation is a symmetry: every draw predicts exactly what it did before relabelling
    x = torch.randn(7, *shape)
    y = torch.randint(0, 3, (7,))
    before = pointwise_log_likelihood(model, samples, x, y)
    after = pointwise_log_likelihood(model, aligned, x, y)
    assert before.shape == (2, 25, 7)
    np.testing.assert_allclose(before, after, rtol=1e-4, atol=1e-4)


def test_mean_target_gathers_two_copies_into_one():
    model = _model("mlp", (1, 4, 4), 2, hidden=(3,))
    guide = MeanFieldGuide(model, init_scale=0.01)
    with torch.no_grad():
        for s in model.site_names():
            guide.loc_of(s).mul_(3.0)
    samples, _ = _permuted_draws(model, guide, chains=2, draws=40, seed=3)
    aligned, report = align_hidden_units(samples, model, target="mean")
    # draws of one copy: the spread across draws is the added noise only, not the gap between units
    for s in ("fc1.weight", "fc1.bias", "fc2.weight"):
        raw_sd = samples[s].reshape(80, -1).std(0).max()
        sd = aligned[s].reshape(80, -1).std(0).max()
        assert sd < 0.05 < raw_sd, (s, float(sd), float(raw_sd))
    assert report["target"] == "mean"
    with pytest.raises(ValueError, match="target must be"):
        align_hidden_units(samples, model, target="nearest")
    with pytest.raises(ValueError, match="needs a pyrocompress MeanFieldGuide"):
        align_hidden_units(samples, model, target="guide")


@pytest.mark.slow  # NUTS
def test_reference_relabels_and_checks_function_space():
    torch.manual_seed(0)
    x = torch.randn(30, 1, 4, 4)
    y = (x.reshape(30, -1)[:, :3].sum(1) > 0).long()
    model = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 2, hidden=(2,)), 2, dataset_size=30)
    guide = MeanFieldGuide(model, init_scale=0.1)
    ref = reference_posterior(model, (x, y), num_chains=2, num_samples=20, warmup=20, guide=guide,
                              max_tree_depth=3, function_space_examples=10, seed=0)
    d = ref.diagnostics
    assert d["relabel"]["target"] == "guide" and d["relabel"]["groups"][0]["units"] == 2
    assert {"max_rhat", "min_ess_bulk", "converged"} <= set(d["unaligned"])
    assert len(d["step_size"]) == 2 and all(v > 0 for v in d["step_size"])
    assert all(0.0 < v <= 1.0 for v in d["mean_accept_prob"]), d["mean_accept_prob"]
    fs = d["function_space"]
    assert fs["num_examples"] == 10 and fs["max_rhat"] is not None and fs["min_ess_bulk"] > 0
    assert ref.inference_data.log_likelihood["y"].shape == (2, 20, 10)
    # the stored log-likelihood is that of the stored (relabelled) draws
    np.testing.assert_allclose(ref.inference_data.log_likelihood["y"].values,
                               pointwise_log_likelihood(model, ref.samples, x[:10], y[:10]), rtol=1e-5, atol=1e-5)
    raw = reference_posterior(model, (x, y), num_chains=2, num_samples=20, warmup=20, guide=guide, max_tree_depth=3,
                              relabel="none", function_space_examples=0, seed=0)
    assert raw.diagnostics["relabel"] == {"target": "none"} and "function_space" not in raw.diagnostics
    assert "log_likelihood" not in raw.inference_data.groups()
    with pytest.raises(ValueError, match="unknown relabel"):
        reference_posterior(model, (x, y), relabel="sorted")
