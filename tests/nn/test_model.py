"""bayesianize, the zoo, architecture descriptions, the posterior-mean network."""
import pytest
import torch
from torch import nn

import pyrocompress as pc
from pyrocompress.infer import PosteriorMean, make_guide, posterior_mean_network
from pyrocompress.nn import BayesConv2d, BayesianModel, BayesLinear, bayesianize
from pyrocompress.nn.arch import ArchitectureError, build, describe


@pytest.mark.parametrize("name,shape", [("mlp", (1, 28, 28)), ("lenet5", (1, 28, 28)), ("kernelnet", (1, 28, 28)),
                                        ("lenet5", (1, 8, 8)), ("kernelnet", (1, 8, 8))])
def test_zoo_models_fit_their_data_shape(name, shape):
    net = pc.build_model(name, shape, 10)
    assert net(torch.randn(3, *shape)).shape == (3, 10)


def test_zoo_sizes():
    lenet300 = pc.build_model("mlp", (1, 28, 28), 10)
    assert sum(p.numel() for p in lenet300.parameters()) == 266_610
    lenet5 = pc.build_model("lenet5", (1, 28, 28), 10)
    assert sum(p.numel() for p in lenet5.parameters()) == 431_080
    kn = pc.build_model("kernelnet", (1, 28, 28), 10)
    assert kn.conv.out_channels == 32 and kn.fc.in_features == 32 * 12 * 12
    with pytest.raises(ValueError, match="valid models"):
        pc.build_model("resnet", (1, 28, 28), 10)


def test_bayesianize_with_tiny_scales_reproduces_the_network():
    torch.manual_seed(0)
    det = pc.build_model("lenet5", (1, 28, 28), 10)
    model = BayesianModel.from_module(det, 10)
    guide = make_guide(model, init_scale=1e-7)
    x = torch.randn(4, 1, 28, 28)
    from pyrocompress.infer import LocalReparameterization, WeightSampling

    for handler in (LocalReparameterization, WeightSampling, PosteriorMean):
        with handler(guide), torch.no_grad():
            out = model.net(x)
        assert torch.allclose(out, det(x), atol=1e-4), handler
    assert torch.allclose(posterior_mean_network(model, guide)(x), det(x), atol=1e-6)


def test_bayesianize_include_exclude_and_priors():
    net = pc.build_model("lenet5", (1, 28, 28), 10)
    bnet = bayesianize(net, prior={"conv*": "normal:0.1", "default": "log_uniform"}, exclude=["fc2"])
    kinds = {n: type(m) for n, m in bnet.named_children()}
    assert kinds["conv1"] is BayesConv2d and kinds["fc1"] is BayesLinear
    assert not isinstance(bnet.fc2, BayesLinear) and isinstance(bnet.fc2, nn.Linear)
    assert bnet.conv1.prior.scale == 0.1 and bnet.fc1.prior.name == "log_uniform"
    assert isinstance(net.conv1, nn.Conv2d) and not isinstance(net.conv1, BayesConv2d)  # input untouched
    with pytest.raises(ValueError, match="matches no"):
        bayesianize(net, include=["nope"])
    with pytest.raises(TypeError):
        bayesianize("not a module")


def test_guide_initialisation_and_shared_scales():
    torch.manual_seed(0)
    det = pc.build_model("kernelnet", (1, 28, 28), 10, kernels=4)
    model = BayesianModel.from_module(det, 10)
    guide = make_guide(model, "group_scale", init_scale=0.01)
    assert torch.equal(guide.loc_of("conv.weight"), det.conv.weight)
    assert guide.scale_of("conv.weight", expand=False).shape == (4, 1, 1, 1)
    assert torch.allclose(guide.scale_of("conv.weight"), torch.full((4, 1, 5, 5), 0.01))
    with pytest.raises(ValueError, match="valid guides"):
        make_guide(model, "laplace")


def test_architecture_description_round_trip():
    net = pc.build_model("lenet5", (1, 28, 28), 10)
    desc = describe(net)
    again = build(desc)
    again.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(again(x), net(x))
    with pytest.raises(ArchitectureError, match="not supported"):
        describe(nn.Sequential(nn.LSTM(3, 3)))
    with pytest.raises(ArchitectureError):
        build({"format": "other"})


def test_categorical_likelihood_refuses_logits_that_would_broadcast():
    """from_arrays gives features as (N, 1, 1, F): a Linear without a Flatten returns (N, 1, 1, C)
    logits, which would broadcast against the labels into a wrong likelihood without a word."""
    import pyro
    from pyrocompress.errors import UserError
    from pyrocompress.nn import BayesianModel

    x, y = torch.randn(5, 1, 1, 4), torch.randint(0, 2, (5,))
    model = BayesianModel.from_module(torch.nn.Sequential(torch.nn.Linear(4, 2)), 2)
    with pyro.poutine.trace(), pytest.raises(UserError, match=r"\(5, 1, 1, 2\).*nn.Flatten"):
        model(x, y)
    flat = BayesianModel.from_module(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), 2)
    assert flat(x, y).shape == (5,)
