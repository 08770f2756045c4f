"""Run directories and checkpoints: exact round trips, safe loading, clear errors."""
import json

import pytest
import torch

import pyrocompress as pc
from pyrocompress.infer.predictive import predictive_probs
from pyrocompress.runs import RunError, load_checkpoint, load_run, save_run
from pyrocompress.training import TrainConfig, train


def test_checkpoint_round_trip_reproduces_predictions_exactly(digits, tmp_path):
    run = train(TrainConfig(model="lenet5", epochs=1, prior={"conv*": "normal:0.5", "default": "log_uniform"}),
                data=digits, out=tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    assert loaded.is_bayesian
    x = digits.test.x[:50]
    torch.manual_seed(5)
    a = predictive_probs(run.model, run.guide, x, num_samples=4)
    torch.manual_seed(5)
    b = predictive_probs(loaded.model, loaded.guide, x, num_samples=4)
    assert torch.equal(a, b)
    assert loaded.model.net.fc1.prior.name == "log_uniform" and loaded.model.net.conv1.prior.scale == 0.5
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"accuracy", "nll", "ece", "brier", "params", "seconds", "epochs"} <= set(metrics)


def test_deterministic_run_round_trip(digits, tmp_path):
    run = train(TrainConfig(model="kernelnet", epochs=1, deterministic=True), data=digits, out=tmp_path / "det")
    loaded = load_run(tmp_path / "det")
    assert not loaded.is_bayesian
    x = digits.test.x[:20]
    assert torch.equal(run.net(x), loaded.net(x))


def test_corrupt_or_foreign_checkpoints_are_refused(digits, tmp_path):
    train(TrainConfig(model="mlp", model_options={"hidden": [8]}, epochs=1), data=digits, out=tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoint.safetensors"
    raw = ckpt.read_bytes()
    (tmp_path / "bad.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RunError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.safetensors")
    # a checkpoint of another model: config says 8 hidden units, tensors have 9
    train(TrainConfig(model="mlp", model_options={"hidden": [9]}, epochs=1), data=digits, out=tmp_path / "b")
    (tmp_path / "a" / "checkpoint.safetensors").write_bytes((tmp_path / "b" / "checkpoint.safetensors").read_bytes())
    with pytest.raises(RunError, match="another model"):
        load_run(tmp_path / "a")
    with pytest.raises(RunError, match="not a pyrocompress run"):
        load_run(tmp_path)
    with pytest.raises(ValueError):
        save_run(tmp_path / "c", {})


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    """Files written through a temporary file get 0666 less the umask, not mkstemp's 0600."""
    import os
    import stat

    import arviz as az
    import numpy as np

    from pyrocompress.diagnostics._arviz import to_netcdf
    from pyrocompress.runs import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        to_netcdf(az.from_dict(posterior={"w": np.zeros((1, 3))}), tmp_path / "p.nc")
    finally:
        os.umask(old)
    for name in ("a.json", "p.nc"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_a_gaussian_likelihood_run_reloads_as_gaussian(tmp_path):
    """The likelihood is rebuilt from its config: a regression model comes back with its noise scale."""
    from collections import OrderedDict

    from pyrocompress.infer.guides import make_guide
    from pyrocompress.nn import BayesianModel, GaussianLikelihood, bayesianize

    template = torch.nn.Sequential(OrderedDict(fc=torch.nn.Linear(3, 1)))
    model = BayesianModel(bayesianize(template), GaussianLikelihood(noise_scale=0.3, dataset_size=50),
                          architecture=template)
    guide = make_guide(model)
    save_run(tmp_path / "reg", {"train": {}}, model=model, guide=guide)
    loaded = load_run(tmp_path / "reg")
    assert isinstance(loaded.model.likelihood, GaussianLikelihood)
    assert loaded.model.likelihood.noise_scale == 0.3 and loaded.model.likelihood.dataset_size == 50

