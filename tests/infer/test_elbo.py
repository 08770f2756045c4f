"""The lean ELBO: its KL is the guide's closed form, its NLL is scaled to the data set, bad inputs are named."""
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from pyrocompress.infer import MeanFieldELBO, make_guide
from pyrocompress.nn import BayesianModel, build_model


@pytest.fixture
def model_guide():
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(5,)), 3, prior="normal:0.5",
                                      dataset_size=120)
    return model, make_guide(model, init_scale=0.05)


def test_terms_are_the_scaled_nll_and_the_closed_form_kl(model_guide):
    model, guide = model_guide
    x, y = torch.randn(12, 1, 4, 4), torch.randint(0, 3, (12,))
    with torch.no_grad():
        nll, kl = MeanFieldELBO().loss_terms(model, guide, x, y)
        torch.testing.assert_close(kl, guide.kl_divergence(model))
    assert float(nll) > 0
    torch.manual_seed(1)
    half = MeanFieldELBO(kl_weight=0.5).loss(model, guide, x, y)
    torch.manual_seed(1)
    with torch.no_grad():
        nll1, kl1 = MeanFieldELBO().loss_terms(model, guide, x, y)
    assert half == pytest.approx(float(nll1 + 0.5 * kl1), rel=1e-5)


def test_it_estimates_the_same_objective_as_pyros_mean_field_elbo(model_guide):
    model, guide = model_guide
    x, y = torch.randn(12, 1, 4, 4), torch.randint(0, 3, (12,))
    torch.manual_seed(0)
    lean = sum(MeanFieldELBO(estimator="weight_sampling").loss(model, guide, x, y) for _ in range(200)) / 200
    torch.manual_seed(0)
    pyro = sum(TraceMeanField_ELBO().loss(model, guide, x, y) for _ in range(200)) / 200
    assert lean == pytest.approx(pyro, rel=0.05)


def test_bad_inputs_are_named(model_guide):
    model, guide = model_guide
    with pytest.raises(ValueError, match="num_particles"):
        MeanFieldELBO(num_particles=0)
    with pytest.raises(TypeError, match="BayesianModel"):
        MeanFieldELBO().loss(torch.nn.Linear(2, 2), guide, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
