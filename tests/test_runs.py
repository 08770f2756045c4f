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



# ----------------------------------------------------------------- results that survive (issue 14)
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A complete tiny Bayesian run, copied by the tests that damage it."""
    from pyrocompress.data import load_dataset

    out = tmp_path_factory.mktemp("small") / "run"
    train(TrainConfig(model="mlp", model_options={"hidden": [8]}, epochs=1, eval_samples=2),
          data=load_dataset("digits", seed=0), out=out)
    return out


def _copy(run, tmp_path, name="copy"):
    import shutil

    return shutil.copytree(run, tmp_path / name)


def test_a_complete_run_is_marked_and_records_its_data(small_run):
    from pyrocompress.runs import run_status

    assert run_status(small_run) == "complete"
    complete = json.loads((small_run / "COMPLETE").read_text())
    assert complete["what"] == "run" and complete["kind"] == "bayesian"
    data = json.loads((small_run / "config.json").read_text())["data"]
    assert data["source"].startswith("scikit-learn") and len(data["sha256"]) == 64
    assert not (small_run / "train_state.safetensors").exists() and not (small_run / ".pyrocompress.lock").exists()


def test_an_unfinished_run_is_refused_with_the_fix(small_run, tmp_path):
    run = _copy(small_run, tmp_path)
    (run / "COMPLETE").unlink()  # what a kill -9 during training leaves: checkpoint + config, no marker
    with pytest.raises(RunError, match=r"unfinished run.*train --resume --out"):
        load_run(run)
    assert load_run(run, complete=False).is_bayesian  # train --resume reads it


def test_a_legacy_run_with_metrics_counts_as_complete(small_run, tmp_path):
    run = _copy(small_run, tmp_path)
    (run / "COMPLETE").unlink()
    config = json.loads((run / "config.json").read_text())
    config["format"] = "pyrocompress.run/1"
    (run / "config.json").write_text(json.dumps(config))
    assert load_run(run).is_bayesian
    (run / "metrics.json").unlink()  # a run/1 that never finished
    with pytest.raises(RunError, match="unfinished"):
        load_run(run)


def test_nan_weights_are_refused_on_load(small_run, tmp_path):
    from pyrocompress.runs import CHECKPOINT, save_checkpoint

    run = _copy(small_run, tmp_path)
    tensors, meta = load_checkpoint(run / CHECKPOINT)
    key = next(k for k in tensors if k.startswith("guide.loc."))
    tensors[key][0] = float("nan")
    save_checkpoint(run / CHECKPOINT, tensors, meta)
    with pytest.raises(RunError, match=r"non-finite values.*guide\.loc\..*retrain"):
        load_run(run)


def test_config_that_is_not_an_object_is_one_error(small_run, tmp_path):
    run = _copy(small_run, tmp_path)
    (run / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(RunError, match="config.json holds JSON list, not an object"):
        load_run(run)


def test_absurd_sizes_in_a_config_are_refused_before_allocating(small_run, tmp_path, monkeypatch):
    from pyrocompress.errors import TooLargeError

    monkeypatch.setenv("PYROCOMPRESS_MAX_MEMORY", str(8 << 30))
    run = _copy(small_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["architecture"]["layers"][1]["out_features"] = 10 ** 9
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises((RunError, TooLargeError), match=r"parameters\).*would need about .* GiB of memory"):
        load_run(run)
    config["architecture"]["layers"][1]["out_features"] = -5
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="negative dimension"):
        load_run(run)


def test_a_huge_file_posing_as_a_checkpoint_is_refused_unread(small_run, tmp_path):
    import resource
    import struct

    from pyrocompress.runs import CHECKPOINT

    run = _copy(small_run, tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # 1. 4 GiB of nothing (a sparse file): its "header length" is absurd
    with open(run / CHECKPOINT, "wb") as fh:
        fh.truncate(4 << 30)
    with pytest.raises(RunError, match="corrupt or not a safetensors file"):
        load_run(run)
    # 2. a well-formed header announcing a 4 GB tensor the model does not have
    header = json.dumps({"model.x": {"dtype": "F32", "shape": [10 ** 9], "data_offsets": [0, 4 * 10 ** 9]}}).encode()
    with open(run / CHECKPOINT, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(8 + len(header) + 4 * 10 ** 9)
    with pytest.raises(RunError, match="holds 3.7 GiB of tensors, its model needs .*another model"):
        load_run(run)
    # 3. a header that says less than the file holds (padded or foreign)
    with pytest.raises(RunError, match="truncated or padded"):
        load_checkpoint(_pad(small_run / CHECKPOINT, tmp_path / "padded.safetensors"))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 512 * 1024  # nothing like the 4 GiB was read


def _pad(src, dst):
    dst.write_bytes(src.read_bytes() + b"\0" * 64)
    return dst


def test_the_data_a_run_was_trained_on_is_checked_when_it_is_loaded_again(small_run, tmp_path):
    from pyrocompress.errors import DataError

    run = load_run(small_run)
    assert run.load_data().checksum == run.config["data"]["sha256"]
    copy = _copy(small_run, tmp_path)
    config = json.loads((copy / "config.json").read_text())
    config["data"]["sha256"] = "0" * 64  # as if it had been trained on other files
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="was made with other digits data"):
        load_run(copy).load_data()
