"""The CLI's train and evaluate commands on digits, and its errors."""
import json

from pyrocompress.cli import main


def test_train_and_evaluate_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--model-option", "hidden=[64]", "--epochs", "4",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy=" in printed and str(out) in printed
    for name in ("checkpoint.safetensors", "config.json", "metrics.json", "history.csv"):
        assert (out / name).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.7 and metrics["epochs"] == 4
    assert main(["evaluate", str(out), "--samples", "8"]) == 0
    assert "re-evaluated" in capsys.readouterr().out
    det = tmp_path / "det"
    assert main(["train", "--deterministic", "--model", "kernelnet", "--epochs", "1", "--out", str(det),
                 "--quiet"]) == 0
    assert json.loads((det / "metrics.json").read_text())["kind"] == "deterministic"


def test_cli_errors_are_clear_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["train", "--model", "resnet", "--out", str(out)]) == 2
    assert "valid models" in capsys.readouterr().err
    assert main(["train", "--prior", "laplace", "--out", str(out)]) == 2
    assert "valid priors" in capsys.readouterr().err
    assert main(["train", "--epochs", "0", "--out", str(out)]) == 2
    assert "epochs" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar", "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a pyrocompress run" in capsys.readouterr().err


def test_each_command_is_registered_by_the_module_main_imports_for_it():
    import argparse
    import importlib

    from pyrocompress.cli import COMMAND_MODULES, COMMAND_OWNERS

    registered = {}
    for name in COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(name).register(sub)
        registered.update({command: name for command in sub.choices})
    assert registered == COMMAND_OWNERS


def test_evaluate_starts_without_the_heavy_imports_it_does_not_need(tmp_path):
    """`pyrocompress evaluate` imports neither the diagnostics' xarray/pandas nor prune or study (start-up time)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from pyrocompress.cli import main; main(['evaluate', sys.argv[1]]); "
            "print(sorted(m for m in ('xarray', 'pandas', 'sklearn', 'matplotlib', 'pyrocompress.prune', "
            "'pyrocompress.study', 'pyrocompress.diagnostics') if m in sys.modules))")
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=root), cwd=root)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
