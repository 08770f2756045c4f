"""Self-compression on digits: an oversized network loses its redundant neurons, not its accuracy."""
import pytest
import torch

from pyrocompress.infer import fit, make_guide
from pyrocompress.nn import BayesianModel, build_model
from pyrocompress.prune.selfcompress import self_compress

FIT = dict(lr=1e-2, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model("mlp", digits.input_shape, 10, hidden=(100,)), 10,
                                      prior="normal:0.1")
    guide = make_guide(model)
    fit(model, guide, digits, epochs=15, seed=0, **FIT)
    return model, guide


def test_iterative_self_compression_shrinks_an_oversized_mlp(trained, digits):
    model, guide = trained
    tolerance = 3.0  # accuracy points; the digits validation split has 180 examples
    result = self_compress(model, guide, digits, score="norm", structure="neuron", iterative=True,
                           tolerance=tolerance, max_rounds=3, finetune_epochs=3, fit_options=FIT)
    rows = result.history
    assert rows[0]["round"] == 0 and rows[0]["units_fc1"] == 100
    assert result.net.fc1.out_features < 60  # the posterior marked many of the 100 neurons redundant
    assert result.net.fc2.out_features == 10  # the output layer is never cut
    accepted = [r for r in rows if r["accepted"]]
    assert accepted[-1]["val_accuracy"] >= rows[0]["val_accuracy"] - tolerance / 100
    assert accepted[-1]["units_fc1"] == result.net.fc1.out_features
    assert all(k in rows[-1] for k in ("params", "nonzero_params", "val_nll", "val_ece", "seconds"))
    assert result.stop_reason
    result.guide.check_belongs_to(result.model)
    assert model.net.fc1.out_features == 100  # inputs untouched


def test_one_shot_weight_level_keeps_deleted_weights_at_zero(trained, digits):
    model, guide = trained
    result = self_compress(model, guide, digits, score="snr", structure="weight", iterative=False,
                           sparsity=0.8, finetune_epochs=1, fit_options=FIT)
    # still sparse after SVI fine-tuning: at most the 20% kept of the original weights are nonzero (whole
    # units whose weights all went are deleted physically, so count against the original size)
    nonzero = sum(int((result.guide.loc_of(f"{n}.weight") != 0).sum()) for n, _ in result.model.bayes_layers())
    original = sum(int(guide.loc_of(f"{n}.weight").numel()) for n, _ in model.bayes_layers())
    assert nonzero <= 0.2 * original + 1
    assert result.history[-1]["action"] == "deleted+finetuned"


def test_bad_inputs(trained, digits):
    model, guide = trained
    other = BayesianModel.from_module(build_model("mlp", digits.input_shape, 10, hidden=(5,)), 10)
    with pytest.raises(ValueError, match="does not belong"):
        self_compress(model, make_guide(other), digits)
    with pytest.raises(ValueError, match="valid structures"):
        self_compress(model, guide, digits, structure="filters2")
    with pytest.raises(ValueError, match="valid scores"):
        self_compress(model, guide, digits, score="entropy")
    with pytest.raises(ValueError, match="one-shot"):
        self_compress(model, guide, digits, sparsity=0.5)
    with pytest.raises(ValueError, match="no layer to prune"):
        self_compress(model, guide, digits, structure="kernel", iterative=False, finetune_epochs=0)
