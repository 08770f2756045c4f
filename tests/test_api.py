"""The front door: the verbs of a workflow, and pc.prune / pc.score on runs and on objects."""
import pytest
import torch

import pyrocompress as pc
from pyrocompress.runs import load_run
from pyrocompress.training import TrainConfig, train


def test_the_front_door_exports_the_verbs():
    for verb in ("load_dataset", "build_model", "bayesianize", "make_guide", "fit", "evaluate", "diagnose", "score",
                 "prune", "self_compress", "run_study", "load_compressed"):
        assert callable(getattr(pc, verb)) and verb in pc.__all__, verb


def test_prune_and_score_a_bayesian_model_and_a_plain_network(digits):
    torch.manual_seed(0)
    model = pc.BayesianModel.from_module(pc.build_model("mlp", digits.input_shape, 10, hidden=(16,)), 10)
    guide = pc.make_guide(model)
    pc.fit(model, guide, digits, epochs=1, seed=0, device="cpu")
    snr = pc.score(model, guide)
    assert snr["fc1"].shape == (16, 64)
    torch.testing.assert_close(snr["fc1"], (guide.loc_of("fc1.weight").abs() / guide.scale_of("fc1.weight")).detach())
    result = pc.prune(model, guide, sparsity=0.8, score="snr")
    assert result.is_bayesian and result.masks.sparsity() == pytest.approx(0.8, abs=0.01)
    assert guide.loc_of("fc1.weight").ne(0).all()  # the inputs are not modified
    units = pc.prune(model, guide, structure="neuron", score="norm", sparsity=0.5)
    assert units.deployable().fc1.out_features == 8
    net = pc.build_model("mlp", digits.input_shape, 10, hidden=(16,))
    plain = pc.prune(net, method="magnitude", compression=4)
    assert plain.net.fc1.weight.eq(0).any() and plain.info["method"] == "magnitude"
    with pytest.raises(ValueError, match="needs a posterior"):
        pc.prune(net, method="magnitude", sparsity=0.5, score="snr")
    with pytest.raises(ValueError, match="needs its pyrocompress guide"):
        pc.prune(model, sparsity=0.5)


def test_prune_a_run_directory_with_a_training_method(digits, tmp_path):
    train(TrainConfig(dataset="digits", model="mlp", model_options={"hidden": [16]}, deterministic=True, epochs=1,
                      device="cpu"), data=digits, out=tmp_path / "det")
    result = pc.prune(tmp_path / "det", method="imp", sparsity=0.6, rounds=2, finetune_epochs=1)
    assert result.info["mask_sparsity"] == pytest.approx(0.6, abs=0.01)
    assert result.epochs(load_run(tmp_path / "det")) == {"pretrain_epochs": 0, "train_epochs": 1,
                                                                  "finetune_epochs": 2, "epochs": 3}
