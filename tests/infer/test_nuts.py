"""NUTS sampling's own pieces: the likelihood's data-set size changes only inside a context, arguments checked."""
import pytest
import torch

from pyrocompress.infer.nuts import count_latent_parameters, dataset_size, sample_nuts
from pyrocompress.nn import BayesianModel, build_model


def test_dataset_size_is_restored_even_when_the_block_fails():
    model = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(2,)), 3, dataset_size=500)
    with dataset_size(model.likelihood, 20) as lik:
        assert lik.dataset_size == 20 and lik.scale(20) == 1.0
    assert model.likelihood.dataset_size == 500
    with pytest.raises(RuntimeError), dataset_size(model.likelihood, 7):
        raise RuntimeError("boom")
    assert model.likelihood.dataset_size == 500
    assert count_latent_parameters(model) == 16 * 2 + 2 + 2 * 3 + 3


def test_bad_arguments_are_named_before_sampling():
    model = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(2,)), 3)
    x, y = torch.randn(5, 1, 4, 4), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="num_chains must be an integer >= 1"):
        sample_nuts(model, (x, y), num_chains=0)
    with pytest.raises(ValueError, match="target_accept"):
        sample_nuts(model, (x, y), target_accept=1.0)
    with pytest.raises(ValueError, match="as many labels"):
        sample_nuts(model, (x, y[:3]))
    with pytest.raises(TypeError, match="Split"):
        sample_nuts(model, [x])
