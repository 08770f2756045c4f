"""`pyrocompress prune` and `pyrocompress compress` on a small digits run."""
import csv
import io
import json

import pytest
import torch

import pyrocompress
from pyrocompress.cli import main

KEYS = ("accuracy", "nll", "ece", "params", "nonzero_params", "compression_ratio", "macs", "speedup", "bytes",
        "latency")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mlp"
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--model-option", "hidden=[48]",
                 "--prior", "normal:0.1", "--epochs", "6", "--lr", "0.01", "--device", "cpu", "--out", str(out),
                 "--quiet"]) == 0
    return out


def _rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _check_outputs(out):
    metrics = json.loads((out / "metrics.json").read_text())
    for key in KEYS:
        assert key in metrics, key
    assert (out / "history.csv").is_file() and _rows(out / "history.csv")
    for name in ("compressed.safetensors", "architecture.json", "compressed.pt2"):
        assert (out / name).is_file(), name
    assert not (out / "compressed.torchscript.pt").exists()  # TorchScript only on request (--torchscript)
    net = pyrocompress.load_compressed(out)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(torch.export.load(str(out / "compressed.pt2")).module()(x), net(x))
    return metrics


def test_prune_weight_level_with_finetuning(run_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", str(run_dir), "--score", "snr", "--sparsity", "0.9", "--finetune-epochs", "1",
                 "--latency-repeats", "3", "--eval-samples", "4", "--out", str(out)]) == 0
    assert "compression" in capsys.readouterr().out
    metrics = _check_outputs(out)
    assert metrics["compression_ratio"] > 5
    assert metrics["nonzero_params"] < 0.2 * metrics["reference_params"]
    assert (out / "bayesian" / "checkpoint.safetensors").is_file()
    stages = [row["stage"] for row in _rows(out / "history.csv")]
    assert stages == ["dense", "pruned", "finetuned"]


def test_prune_neurons_and_compress_iteratively(run_dir, tmp_path):
    out = tmp_path / "neurons"
    assert main(["prune", str(run_dir), "--score", "norm", "--structure", "neuron", "--sparsity", "0.5",
                 "--no-latency", "--eval-samples", "4", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["units"]["fc1"] == 24 and metrics["speedup"] > 1.5
    out2 = tmp_path / "compressed"
    assert main(["compress", str(run_dir), "--iterative", "--tolerance", "5", "--max-rounds", "2",
                 "--finetune-epochs", "1", "--latency-repeats", "3", "--eval-samples", "4", "--out", str(out2)]) == 0
    metrics = _check_outputs(out2)
    assert metrics["stop_reason"] and metrics["units"]["fc2"] == 10
    rounds = _rows(out2 / "history.csv")
    assert rounds[0]["round"] == "0"


def test_cli_bad_inputs(run_dir, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["prune", str(run_dir), "--sparsity", "1.0", "--out", str(out)]) == 2
    assert "[0, 1)" in capsys.readouterr().err
    assert main(["prune", str(run_dir), "--score", "bogus", "--sparsity", "0.5", "--out", str(out)]) == 2
    assert "valid scores" in capsys.readouterr().err
    assert main(["prune", str(run_dir), "--structure", "rows", "--sparsity", "0.5", "--out", str(out)]) == 2
    assert "valid structures" in capsys.readouterr().err
    assert main(["prune", str(run_dir), "--method", "nope", "--sparsity", "0.5", "--out", str(out)]) == 2
    assert "valid methods" in capsys.readouterr().err
    assert not out.exists()


def test_prune_measures_a_run_with_the_predictive_it_was_trained_for(run_dir, tmp_path):
    mp = tmp_path / "mp"
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--model-option", "hidden=[16]",
                 "--estimator", "moment_propagation:relu=taylor", "--epochs", "2", "--lr", "0.01",
                 "--device", "cpu", "--out", str(mp), "--quiet"]) == 0
    common = ["--score", "snr", "--sparsity", "0.5", "--no-latency", "--eval-samples", "4"]
    for run, extra, expected in ((mp, [], "moment_propagation:relu=taylor"),
                                 (mp, ["--eval-estimator", "weight_sampling"], "weight_sampling"),
                                 (run_dir, [], "weight_sampling")):
        out = tmp_path / f"out-{len(extra)}-{run.name}"
        assert main(["prune", str(run), *common, *extra, "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["eval_estimator"] == expected
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["dense"]["accuracy"] > 0.5
