"""Estimators: local reparameterization / flipout give the pre-activation distribution of weight sampling."""
import pytest
import torch
from torch import nn

from pyrocompress.infer import Flipout, LocalReparameterization, PosteriorMean, WeightSampling, make_guide
from pyrocompress.infer.estimators import make_estimator
from pyrocompress.nn import BayesianModel


def _model(layer: nn.Module, num_classes: int):
    net = nn.Sequential(layer)
    model = BayesianModel.from_module(net, num_classes)
    guide = make_guide(model, init_scale=0.3)
    with torch.no_grad():
        for p in guide.log_scale.values():
            p.add_(torch.rand_like(p) - 0.5)
    return model, guide


@pytest.mark.parametrize("layer,shape", [(nn.Linear(6, 3), (6,)), (nn.Conv2d(2, 3, 3), (2, 5, 5))])
@pytest.mark.parametrize("estimator", [LocalReparameterization, Flipout])
def test_pre_activation_moments_match_weight_sampling(layer, shape, estimator):
    torch.manual_seed(0)
    model, guide = _model(layer, 3)
    x = torch.randn(1, *shape)
    n = 40_000
    with torch.no_grad():
        with WeightSampling(guide):
            ws = torch.stack([model.net(x)[0] for _ in range(n // 10)])  # one weight draw per forward
        with estimator(guide):
            # batches of 10 rows: flipout shares one perturbation per batch (rows are then
            # dependent within a batch, but each row's marginal must be exact)
            fast = torch.cat([model.net(x.expand(10, *shape)) for _ in range(n // 10)])
    # means agree within 6 standard errors of the weight-sampling estimate; variances within 8%
    se = ws.std(0) / (ws.shape[0] ** 0.5)
    assert torch.all((ws.mean(0) - fast.mean(0)).abs() < 6 * se + 1e-3)
    assert torch.allclose(ws.var(0), fast.var(0), rtol=0.08)


def test_posterior_mean_and_estimator_names():
    model, guide = _model(nn.Linear(4, 2), 2)
    x = torch.randn(5, 4)
    with PosteriorMean(guide):
        out = model.net(x)
    ref = x @ guide.loc_of("0.weight").T + guide.loc_of("0.bias")
    assert torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(ValueError, match="valid estimators"):
        make_estimator("nope", guide)


def test_without_handler_the_layer_samples_from_its_sites():
    import pyro
    from pyro import poutine

    model, guide = _model(nn.Linear(4, 2), 2)
    x = torch.randn(3, 4)
    trace = poutine.trace(guide).get_trace()
    out = poutine.replay(model.net, trace=trace)(x)
    w, b = trace.nodes["0.weight"]["value"], trace.nodes["0.bias"]["value"]
    assert torch.allclose(out, x @ w.T + b, atol=1e-6)
    model_trace = poutine.trace(model).get_trace(x, torch.tensor([0, 1, 0]))
    assert {"0.weight", "0.bias", "obs"} <= set(model_trace.nodes)
    assert pyro.get_param_store().keys() == set()
