"""The PosteriorGuide protocol of MeanFieldGuide: moments, masking, slicing, likeness, belonging."""
import math

import pytest
import torch
from pyro.infer.autoguide import AutoNormal

from pyrocompress.infer.guides import (MASKED_SCALE, GUIDES, MeanFieldGuide, PosteriorGuide, is_posterior_guide,
                                       make_guide)
from pyrocompress.nn import BayesianModel, build_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(5,)), 3)


def test_pyrocompress_guides_follow_the_protocol_and_autoguides_do_not(model):
    for name in GUIDES:
        guide = make_guide(model, name)
        assert is_posterior_guide(guide) and isinstance(guide, PosteriorGuide)
    assert not is_posterior_guide(AutoNormal(model))
    with pytest.raises(ValueError, match="valid guides"):
        make_guide(model, "full_rank")


def test_moments_start_at_the_network_and_the_initial_scale(model):
    guide = make_guide(model, init_scale=0.01)
    torch.testing.assert_close(guide.loc_of("fc1.weight").detach(), model.net.fc1.init_weight)
    assert torch.allclose(guide.scale_of("fc1.weight"), torch.full((5, 16), 0.01))
    assert guide.site_names() == model.site_names()
    assert all(float(v.abs().max()) == 0 for v in guide.scale_movement().values())
    shared = make_guide(model, "group_scale", init_scale=0.01)
    assert shared.scale_of("fc1.weight", expand=False).shape == (5, 1)
    assert shared.config() == {"name": "group_scale", "init_scale": 0.01}


def test_mask_zeroes_locations_and_sets_the_masked_scale(model):
    guide = make_guide(model)
    keep = torch.ones(5, 16, dtype=torch.bool)
    keep[1] = False
    guide.mask_("fc1.weight", keep)
    assert bool((guide.loc_of("fc1.weight")[1] == 0).all())
    assert guide.scale_of("fc1.weight")[1].max().item() == pytest.approx(MASKED_SCALE)
    assert guide.scale_of("fc1.weight")[0].min().item() == pytest.approx(1e-3)


def test_like_and_shrunk_keep_the_kind_and_slice_the_kept_units(model):
    guide = make_guide(model, "group_scale", init_scale=0.02)
    small = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(2,)), 3)
    fresh = guide.like(small)
    assert fresh.config() == guide.config()
    fresh.check_belongs_to(small)
    keep = {"fc1": torch.tensor([0, 3])}
    inputs = {"fc2": torch.tensor([0, 3])}
    cut = guide.shrunk(small, keep, inputs)
    cut.check_belongs_to(small)
    torch.testing.assert_close(cut.loc_of("fc1.weight"), guide.loc_of("fc1.weight")[[0, 3]].detach())
    torch.testing.assert_close(cut.loc_of("fc2.weight"), guide.loc_of("fc2.weight")[:, [0, 3]].detach())


def test_set_posterior_and_belonging_are_checked(model):
    guide = make_guide(model)
    guide.set_posterior_("fc2.bias", loc=torch.ones(3), scale=0.5)
    assert guide.scale_of("fc2.bias").tolist() == pytest.approx([0.5] * 3)
    assert math.isclose(float(guide.loc_of("fc2.bias").detach().sum()), 3.0)
    with pytest.raises(ValueError, match="positive"):
        guide.set_posterior_("fc2.bias", scale=0.0)
    with pytest.raises(ValueError, match="no site"):
        guide.set_posterior_("fc9.bias", loc=torch.zeros(3))
    other = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(6,)), 3)
    with pytest.raises(ValueError, match="does not belong"):
        guide.check_belongs_to(other)
    with pytest.raises(TypeError, match="BayesianModel"):
        MeanFieldGuide(torch.nn.Linear(2, 2))
