"""`pyrocompress prune --method magnitude|random|imp|lottery|gradual` on a tiny deterministic digits run."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from pyrocompress.cli import main
from pyrocompress.infer import fit_deterministic
from pyrocompress.infer.predictive import evaluate
from pyrocompress.prune import load_compressed
from pyrocompress.prune.methods import initial_network
from pyrocompress.runs import load_run
from pyrocompress.training import TrainConfig, train

EPOCHS = 2


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "run"
    cfg = TrainConfig(dataset="digits", model="mlp", model_options={"hidden": [32, 16]}, deterministic=True,
                      epochs=EPOCHS, batch_size=64, lr=3e-3, seed=0, device="cpu")
    train(cfg, out=out)
    return out


@pytest.fixture(scope="module")
def bayes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bayes") / "run"
    cfg = TrainConfig(dataset="digits", model="mlp", model_options={"hidden": [16]}, epochs=1, batch_size=128,
                      seed=0, device="cpu", eval_samples=4)
    train(cfg, out=out)
    return out


def prune(run, out, *extra: str) -> int:
    return main(["prune", str(run), "--out", str(out), "--no-latency", "--eval-samples", "4", *extra])


def metrics_of(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_magnitude_global_writes_the_same_files_as_the_bayesian_prune(det_run, tmp_path, capsys):
    out = tmp_path / "mag"
    assert prune(det_run, out, "--method", "magnitude", "--scope", "global", "--sparsity", "0.9") == 0
    for name in ("metrics.json", "history.csv", "compressed.safetensors", "architecture.json", "masks.safetensors"):
        assert (out / name).is_file(), name
    m = metrics_of(out)
    assert m["method"] == "magnitude" and m["scope"] == "global"
    assert m["mask_sparsity"] == pytest.approx(0.9, abs=1e-3)
    weights = 64 * 32 + 32 * 16 + 16 * 10
    assert m["reference_params"] == weights + 32 + 16 + 10
    # nonzero = kept weights + biases (of the units that survive the shrink)
    assert m["nonzero_params"] <= round(0.1 * weights) + 58
    assert m["compression_ratio"] > 5 and m["speedup"] > 5
    for key in ("accuracy", "nll", "ece", "macs", "macs_nonzero", "bytes", "dense"):
        assert key in m
    assert m["budget"]["train_epochs"] == EPOCHS and m["budget"]["total_epochs"] == EPOCHS
    run = load_run(det_run)
    net = load_compressed(out)
    data = run.load_data()
    assert evaluate(net, data.test)["accuracy"] == pytest.approx(m["accuracy"])
    assert "compression" in capsys.readouterr().out


def test_structured_l1_pruning_shrinks_the_network(det_run, tmp_path):
    out = tmp_path / "l1"
    assert prune(det_run, out, "--method", "magnitude", "--structure", "neuron", "--score", "l1",
                 "--sparsity", "0.5") == 0
    m = metrics_of(out)
    assert m["scope"] == "layer" and m["structure"] == "neuron"
    net = load_compressed(out)
    assert net.fc1.out_features == 16 and net.fc2.out_features == 8 and net.fc3.out_features == 10
    assert m["params"] < m["reference_params"]


def test_random_is_reproducible(det_run, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert prune(det_run, a, "--method", "random", "--sparsity", "0.5", "--seed", "3") == 0
    assert prune(det_run, b, "--method", "random", "--sparsity", "0.5", "--seed", "3") == 0
    ma, mb = load_file(str(a / "masks.safetensors")), load_file(str(b / "masks.safetensors"))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_imp_counts_its_fine_tuning_in_the_budget(det_run, tmp_path):
    out = tmp_path / "imp"
    assert prune(det_run, out, "--method", "imp", "--rounds", "2", "--finetune-epochs", "1", "--sparsity", "0.8") == 0
    m = metrics_of(out)
    assert m["mask_sparsity"] == pytest.approx(0.8, abs=5e-3)
    assert m["budget"]["finetune_epochs"] == 2 and m["budget"]["total_epochs"] == EPOCHS + 2
    history = (out / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["dense", "round 1", "round 2", "pruned"]


def test_equal_budget_option(det_run, tmp_path):
    for method, extra in (("magnitude", ["--sparsity", "0.5"]), ("imp", ["--rounds", "2", "--sparsity", "0.5"]),
                          ("gradual", ["--sparsity", "0.5"])):
        out = tmp_path / method
        assert prune(det_run, out, "--method", method, "--budget-epochs", str(EPOCHS + 1), *extra) == 0
        assert metrics_of(out)["budget"]["total_epochs"] == EPOCHS + 1, method


def test_lottery_stores_the_rebuilt_initial_weights(det_run, tmp_path):
    out = tmp_path / "lottery"
    assert prune(det_run, out, "--method", "lottery", "--rounds", "2", "--sparsity", "0.6",
                 "--train-epochs", "1") == 0
    m = metrics_of(out)
    assert m["mask_sparsity"] == pytest.approx(0.6, abs=5e-3)
    assert m["budget"]["total_epochs"] == EPOCHS + 2
    stored = load_file(str(out / "lottery.safetensors"))
    run = load_run(det_run)
    data = run.load_data()
    init = initial_network(run, data)
    for k, v in init.state_dict().items():
        assert torch.equal(stored[f"init.{k}"], v)
    # the rebuilt init is the run's: retraining it the run's way gives the run's weights
    cfg = run.config["train"]
    again = copy.deepcopy(init)
    fit_deterministic(again, data, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                      seed=cfg["seed"], device="cpu")
    for k, v in run.net.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)
    masks = load_file(str(out / "masks.safetensors"))
    keep = masks["weight::fc1"].bool()
    assert torch.equal(stored["ticket.fc1.weight"][keep], stored["init.fc1.weight"][keep])


def test_gradual_runs_on_a_deterministic_run(det_run, tmp_path):
    out = tmp_path / "gradual"
    assert prune(det_run, out, "--method", "gradual", "--finetune-epochs", "1", "--sparsity", "0.7",
                 "--pruning-steps", "4") == 0
    m = metrics_of(out)
    assert m["mask_sparsity"] == pytest.approx(0.7, abs=5e-3)
    assert m["budget"]["finetune_epochs"] == 1


@pytest.mark.parametrize("extra, message", [
    (["--method", "magnitude", "--score", "snr", "--sparsity", "0.5"], "needs a posterior"),
    (["--method", "imp", "--rounds", "-1", "--sparsity", "0.5"], "rounds"),
    (["--method", "imp", "--finetune-epochs", "-1", "--sparsity", "0.5"], "finetune-epochs"),
    (["--method", "magnitude"], "needs --sparsity"),
    (["--method", "magnitude", "--sparsity", "1.5"], r"\[0, 1\)"),
    (["--method", "bogus", "--sparsity", "0.5"], "valid methods"),
    (["--method", "lottery", "--structure", "neuron", "--sparsity", "0.5"], "single weights"),
])
def test_bad_input_on_a_deterministic_run(det_run, tmp_path, capsys, extra, message):
    assert prune(det_run, tmp_path / "bad", *extra) == 2
    err = capsys.readouterr().err
    assert "pyrocompress prune: error:" in err
    assert pytest.importorskip("re").search(message, err), err


def test_bayesian_run_takes_magnitude_of_the_posterior_mean_but_not_retraining_methods(bayes_run, tmp_path, capsys):
    assert prune(bayes_run, tmp_path / "imp", "--method", "imp", "--sparsity", "0.5") == 2
    err = capsys.readouterr().err
    assert "does not fit a Bayesian run" in err and "--method magnitude" in err
    assert prune(bayes_run, tmp_path / "rnd", "--method", "random", "--sparsity", "0.5") == 2
    assert "does not fit a Bayesian run" in capsys.readouterr().err
    out = tmp_path / "mu"
    assert prune(bayes_run, out, "--method", "magnitude", "--sparsity", "0.5") == 0
    m = metrics_of(out)
    assert m["method"] == "magnitude" and m["score"] == "magnitude"
    assert m["mask_sparsity"] == pytest.approx(0.5, abs=1e-2)
    assert (out / "bayesian").is_dir()


def test_prune_shows_progress_bars_over_rounds_and_retraining_unless_quiet(det_run, tmp_path, capsys):
    assert prune(det_run, tmp_path / "imp", "--method", "imp", "--rounds", "2", "--finetune-epochs", "1",
                 "--sparsity", "0.5") == 0
    err = capsys.readouterr().err
    assert "IMP rounds" in err and "2/2" in err and "train" in err  # the rounds bar and each retraining's bar
    assert prune(det_run, tmp_path / "quiet", "--method", "imp", "--rounds", "2", "--finetune-epochs", "1",
                 "--sparsity", "0.5", "--quiet") == 0
    assert "IMP rounds" not in capsys.readouterr().err
    # the sparse exports load back exactly, and metrics.json gives every file's size
    m = metrics_of(tmp_path / "quiet")
    assert set(m["export_bytes"]) >= {"safetensors", "csr", "pt2"} and m["export"]["onnx"] is None
    dense, sparse = load_compressed(tmp_path / "quiet"), load_compressed(tmp_path / "quiet", kind="csr")
    for key, value in dense.state_dict().items():
        assert torch.equal(sparse.state_dict()[key], value)
