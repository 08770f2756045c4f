"""Structured deletion: shrunk networks compute what the masked ones do, Bayesian or plain."""
import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from pyrocompress.data import from_arrays
from pyrocompress.infer import fit, make_guide
from pyrocompress.infer.estimators import PosteriorMean
from pyrocompress.nn import BayesianModel, build_model
from pyrocompress.nn.arch import build
from pyrocompress.prune.masks import Masks, layer_shapes
from pyrocompress.prune.shrink import ShrinkError, plan_shrink, shrink


def _seq(*layers):
    return nn.Sequential(OrderedDict(layers))


def _random_units(net, seed=0, p=0.5):
    gen = torch.Generator().manual_seed(seed)
    shapes = layer_shapes(net)
    keep = {}
    for name, shape in list(shapes.items())[:-1]:
        k = torch.rand(shape[0], generator=gen) > p
        k[0] = True
        keep[name] = k
    return keep, shapes


NETS = {
    "linear-linear": lambda: _seq(("fc1", nn.Linear(7, 9)), ("act", nn.Tanh()), ("fc2", nn.Linear(9, 8)),
                                  ("relu", nn.ReLU()), ("fc3", nn.Linear(8, 3))),
    "conv-conv": lambda: _seq(("c1", nn.Conv2d(2, 6, 3)), ("relu", nn.ReLU()), ("c2", nn.Conv2d(6, 5, 3)),
                              ("flat", nn.Flatten()), ("fc", nn.Linear(5 * 6 * 6, 4))),
    "conv-pool-flatten-linear": lambda: _seq(("conv", nn.Conv2d(2, 8, 3, padding=1)), ("relu", nn.ReLU()),
                                             ("pool", nn.MaxPool2d(2)), ("flat", nn.Flatten()),
                                             ("fc", nn.Linear(8 * 5 * 5, 6)), ("sig", nn.Sigmoid()),
                                             ("out", nn.Linear(6, 3))),
}
INPUTS = {"linear-linear": (7,), "conv-conv": (2, 10, 10), "conv-pool-flatten-linear": (2, 10, 10)}


@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("mask_bias", [True, False])
def test_shrunk_equals_masked_plain(kind, mask_bias):
    torch.manual_seed(1)
    net = NETS[kind]()
    with torch.no_grad():  # make every bias clearly nonzero: deleted units then emit constants
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.bias.copy_(torch.randn_like(m.bias))
    keep, shapes = _random_units(net)
    masks = Masks.from_units(keep, shapes, mask_bias=mask_bias)
    masked = copy.deepcopy(net)
    masks.apply(masked)
    result = shrink(net, masks=masks)
    x = torch.randn(16, *INPUTS[kind])
    torch.testing.assert_close(result.net(x), masked(x), rtol=1e-5, atol=1e-5)
    for name, k in keep.items():
        assert result.plan.sizes_after[name] == int(k.sum()), name
    # the architecture description rebuilds the smaller network
    rebuilt = build(result.architecture)
    rebuilt.load_state_dict(result.net.state_dict())
    torch.testing.assert_close(rebuilt(x), result.net(x))
    assert sum(p.numel() for p in result.net.parameters()) < sum(p.numel() for p in net.parameters())


def test_unused_units_are_deleted_and_the_output_layer_is_kept():
    torch.manual_seed(0)
    net = NETS["linear-linear"]()
    with torch.no_grad():
        net.fc2.weight[:, 3] = 0  # fc1 unit 3 feeds nothing
        net.fc3.weight.zero_()  # output layer reads nothing: its units must stay anyway
    plan = plan_shrink(net, warn=False)
    assert 3 not in plan.keep["fc1"].tolist()
    assert plan.sizes_after["fc3"] == 3
    assert plan.sizes_after["fc2"] >= 1


def test_constant_that_cannot_be_folded_keeps_the_unit():
    torch.manual_seed(0)
    net = _seq(("c1", nn.Conv2d(1, 4, 3)), ("c2", nn.Conv2d(4, 3, 3, padding=1)), ("flat", nn.Flatten()),
               ("fc", nn.Linear(3 * 6 * 6, 2)))
    with torch.no_grad():
        net.c1.weight[1] = 0
        net.c1.bias[1] = 0.7
    with pytest.warns(UserWarning, match="cannot be folded"):
        result = shrink(net)
    assert result.plan.sizes_after["c1"] == 4
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(result.net(x), net(x))


def test_bayesian_shrink_matches_masked_posterior_mean_and_trains_further():
    torch.manual_seed(0)
    arch = build_model("lenet5", (1, 16, 16), 4, channels=(5, 6), hidden=10)  # unpadded convs
    model = BayesianModel.from_module(arch, 4, prior="normal:0.5")
    guide = make_guide(model)
    with torch.no_grad():
        guide.loc["conv1__bias"].normal_()
    keep, shapes = _random_units(arch, seed=3)
    masks = Masks.from_units(keep, shapes, mask_bias=False)
    result = shrink(model, guide, masks=masks)
    m2, g2 = copy.deepcopy(model), copy.deepcopy(guide)
    masks.apply(m2, g2)
    x = torch.randn(10, 1, 16, 16)
    with PosteriorMean(g2):
        expected = m2.net(x)
    with PosteriorMean(result.guide):
        got = result.model.net(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.net(x), expected, rtol=1e-5, atol=1e-5)
    # kept scales are carried over
    rows, cols = result.plan.keep["fc1"], result.plan.inputs["fc1"]
    torch.testing.assert_close(result.guide.scale_of("fc1.weight"), guide.scale_of("fc1.weight")[rows][:, cols])
    assert result.plan.sizes_after["conv1"] == int(keep["conv1"].sum())
    result.guide.check_belongs_to(result.model)
    # priors carried over, the inputs untouched
    assert result.model.net.conv1.prior.to_config() == model.net.conv1.prior.to_config()
    assert guide.loc_of("conv1.weight").shape[0] == 5
    gen = torch.Generator().manual_seed(0)
    data = from_arrays(torch.randn(64, 1, 16, 16, generator=gen), torch.randint(0, 4, (64,), generator=gen),
                       val_fraction=0.25)
    history = fit(result.model, result.guide, data, epochs=1, batch_size=16, device="cpu").history
    assert torch.isfinite(torch.tensor(history[-1]["loss"]))


def test_unsupported_structures_are_named():
    net = _seq(("fc1", nn.Linear(4, 5)), ("bn", nn.BatchNorm1d(5)), ("fc2", nn.Linear(5, 2)))
    with pytest.raises(ShrinkError, match="'bn'"):
        shrink(net)
    with pytest.raises(ShrinkError, match="nn.Sequential"):
        shrink(nn.ModuleDict({"a": nn.Linear(2, 2)}))
    model = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(5,)), 3)
    with pytest.raises(TypeError, match="MeanFieldGuide"):
        shrink(model)
