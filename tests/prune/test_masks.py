"""Masks: composition, application to plain networks and to a Bayesian model + guide, handler, hook."""
import copy

import pytest
import torch

from pyrocompress.infer import make_guide
from pyrocompress.infer.estimators import LocalReparameterization, PosteriorMean
from pyrocompress.nn import BayesianModel, build_model
from pyrocompress.prune.masks import MASKED_SCALE, MaskLayers, Masks, layer_shapes


def _mlp():
    torch.manual_seed(0)
    return build_model("mlp", (1, 4, 4), 3, hidden=(6,))


def test_masks_compose_with_and_and_count():
    net = _mlp()
    shapes = layer_shapes(net)
    assert shapes == {"fc1": (6, 16), "fc2": (3, 6)}
    a = Masks({"fc1": torch.rand(6, 16) > 0.5})
    b = Masks({"fc1": torch.rand(6, 16) > 0.5, "fc2": torch.ones(3, 6, dtype=torch.bool)})
    c = a & b
    assert torch.equal(c.weight["fc1"], a.weight["fc1"] & b.weight["fc1"])
    assert torch.equal(c.weight["fc2"], b.weight["fc2"])
    units = Masks.from_units({"fc1": torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)}, shapes)
    assert units.summary()["fc1"] == {"weights_kept": 64, "weights": 96, "units_kept": 4, "units": 6}
    assert torch.equal(units.bias["fc1"], torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool))
    assert Masks.from_tensors(units.to_tensors()).summary() == units.summary()
    with pytest.raises(ValueError, match="unknown layer"):
        Masks({"nope": torch.ones(2, 2)}).check(net)
    with pytest.raises(ValueError, match="shape"):
        Masks({"fc1": torch.ones(2, 2)}).check(net)


def test_apply_to_plain_network_and_step_hook_keeps_zeros():
    net = _mlp()
    mask = Masks({"fc1": torch.rand(6, 16) > 0.3})
    mask.apply(net)
    assert bool((net.fc1.weight[~mask.weight["fc1"]] == 0).all())
    hook = mask.step_hook()
    with torch.no_grad():
        net.fc1.weight.add_(1.0)
    hook(net)
    assert bool((net.fc1.weight[~mask.weight["fc1"]] == 0).all())
    assert bool((net.fc1.weight[mask.weight["fc1"]] != 0).all())


def test_apply_to_bayesian_model_zero_mean_and_zero_variance():
    model = BayesianModel.from_module(_mlp(), 3)
    guide = make_guide(model)
    keep = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    masks = Masks.from_units({"fc1": keep}, layer_shapes(model))
    masks.apply(model, guide)
    loc, scale = guide.loc_of("fc1.weight"), guide.scale_of("fc1.weight")
    assert bool((loc[~keep] == 0).all()) and bool((guide.loc_of("fc1.bias")[~keep] == 0).all())
    assert float(scale[~keep].detach().max()) <= 1.01 * MASKED_SCALE
    assert torch.allclose(scale[~keep], torch.tensor(MASKED_SCALE))
    # sampled pre-activations of the deleted units are exactly zero-ish: no noise
    x = torch.randn(32, 1, 4, 4)
    with LocalReparameterization(guide):
        h = model.net.fc1(model.net.flatten(x))
    assert float(h[:, ~keep].detach().abs().max()) < 1e-5
    # the hook receives (model, guide) as fit() calls it
    with torch.no_grad():
        guide.loc["fc1__weight"].add_(0.5)
    masks.step_hook()(model, guide)
    assert bool((guide.loc_of("fc1.weight")[~keep] == 0).all())
    with pytest.raises(ValueError, match="needs its guide"):
        masks.apply(model)


def test_group_scale_guide_masks_whole_units_only():
    model = BayesianModel.from_module(_mlp(), 3)
    guide = make_guide(model, "group_scale")
    keep = torch.tensor([1, 0, 1, 1, 1, 1], dtype=torch.bool)
    Masks.from_units({"fc1": keep}, layer_shapes(model)).apply(model, guide)
    scale = guide.scale_of("fc1.weight", expand=False).flatten()
    assert float(scale[1].detach()) == pytest.approx(MASKED_SCALE) and bool((scale[keep] != MASKED_SCALE).all())


def test_mask_handler_composes_with_estimators_and_matches_applied_masks():
    model = BayesianModel.from_module(_mlp(), 3)
    guide = make_guide(model)
    masks = Masks({"fc1": torch.rand(6, 16) > 0.5, "fc2": torch.rand(3, 6) > 0.2})
    x = torch.randn(8, 1, 4, 4)
    with PosteriorMean(guide), MaskLayers(masks):
        handled = model.net(x)
    m2, g2 = copy.deepcopy(model), copy.deepcopy(guide)
    masks.apply(m2, g2)
    with PosteriorMean(g2):
        applied = m2.net(x)
    torch.testing.assert_close(handled, applied)
    # parameters untouched by the handler
    assert bool((guide.loc_of("fc1.weight") != 0).all())
    # with no estimator the handler masks sampled weights: still runs
    with MaskLayers(masks):
        assert model.net(x).shape == (8, 3)
