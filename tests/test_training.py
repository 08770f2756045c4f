"""training: TrainConfig checks its fields at the edge; init_from starts from a trained twin and counts it."""
import pytest
import torch

from pyrocompress.runs import RunError, load_run
from pyrocompress.training import TrainConfig, train


def test_unknown_and_bad_fields_are_named():
    with pytest.raises(ValueError, match=r"unknown training options \['epoch'\]; valid options"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(lr=-1.0).validate()
    with pytest.raises(ValueError, match="scale_lr must be positive"):
        TrainConfig(scale_lr=0.0).validate()
    assert TrainConfig.from_dict(TrainConfig(epochs=2).to_dict()).epochs == 2


def test_init_from_starts_the_guide_at_the_twin_and_counts_its_epochs(digits, tmp_path):
    common = dict(dataset="digits", model="mlp", model_options={"hidden": [8]}, limit=200, device="cpu", seed=1)
    twin = train(TrainConfig(deterministic=True, epochs=2, **common), data=digits, out=tmp_path / "twin")
    # with 0 training epochs of its own the guide's means would be the twin's; check through one short run
    bnn = train(TrainConfig(epochs=1, lr=1e-9, init_from=str(tmp_path / "twin"), **common), data=digits,
                out=tmp_path / "bnn")
    assert bnn.metrics["pretrain_epochs"] == 2 and bnn.metrics["epochs"] == 1 and bnn.metrics["total_epochs"] == 3
    torch.testing.assert_close(bnn.guide.loc_of("fc1.weight").detach(), twin.net.fc1.weight.detach(), atol=1e-5,
                               rtol=0)
    assert load_run(tmp_path / "bnn").config["train"]["init_from"] == str(tmp_path / "twin")
    again = train(TrainConfig(epochs=1, init_from=str(tmp_path / "bnn"), **common), data=digits)  # chained
    assert again.metrics["pretrain_epochs"] == 3
    with pytest.raises(RunError, match="another architecture"):
        train(TrainConfig(epochs=1, init_from=str(tmp_path / "twin"),
                          **dict(common, model_options={"hidden": [9]})), data=digits)
