"""Bayesian layers: sites, priors, initial values, and the deterministic layer of given weights."""
import pytest
import torch
import torch.nn.functional as F

from pyrocompress.nn.layers import BayesConv2d, BayesLinear, bayes_layers
from pyrocompress.nn.priors import NormalPrior


def test_linear_sites_priors_and_initial_values():
    w, b = torch.randn(3, 4), torch.randn(3)
    layer = BayesLinear(4, 3, prior="normal:0.5", init_weight=w, init_bias=b)
    assert layer.sites() == ("weight", "bias") and layer.out_units == 3
    assert layer.site_shape("weight") == (3, 4) and layer.site_shape("bias") == (3,)
    assert isinstance(layer.prior_of("weight"), NormalPrior) and layer.prior_of("weight").scale == 0.5
    assert layer.prior_of("bias").scale == 0.5  # the bias takes the weight's prior unless given its own
    torch.testing.assert_close(layer.init_weight, w)
    torch.testing.assert_close(layer.init_bias, b)
    no_bias = BayesLinear(4, 3, bias=False)
    assert no_bias.sites() == ("weight",)


def test_initial_weight_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"init_weight has shape \(4, 3\), expected \(3, 4\)"):
        BayesLinear(4, 3, init_weight=torch.zeros(4, 3))


def test_deterministic_layer_computes_with_the_given_weights():
    conv = BayesConv2d(2, 3, 3, padding=1)
    w, b = torch.randn(3, 2, 3, 3), torch.randn(3)
    plain = conv.deterministic(w, b)
    x = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(plain(x), F.conv2d(x, w, b, padding=1))
    torch.testing.assert_close(conv.op(x, w, b), F.conv2d(x, w, b, padding=1))
    lin = BayesLinear(5, 2)
    w2 = torch.randn(2, 5)
    torch.testing.assert_close(lin.deterministic(w2, None)(torch.ones(1, 5)), torch.ones(1, 5) @ w2.T)


def test_bayes_layers_lists_nested_layers_in_order():
    net = torch.nn.Sequential(BayesLinear(4, 3), torch.nn.ReLU(), torch.nn.Sequential(BayesLinear(3, 2)))
    assert [name for name, _ in bayes_layers(net)] == ["0", "2.0"]
