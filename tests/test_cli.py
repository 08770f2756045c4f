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


# ----------------------------------------------------------------- results that survive (issue 14)
import errno  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--model-option", "hidden=[8]", "--limit", "200",
         "--epochs", "1", "--eval-samples", "2", "--quiet"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_bad_train_inputs_are_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(TRAIN + ["--prior", "{bad", "--out", str(tmp_path / "o")]) == 2
    assert "--prior '{bad'" in _err(capsys)
    assert main(TRAIN + ["--out", str(a_file)]) == 2
    assert "--out" in _err(capsys) and a_file.read_text() == "x"
    assert main(TRAIN + ["--out", str(a_file / "run")]) == 2
    assert "is a file, so no folder can be made below it" in _err(capsys)
    assert main(TRAIN + ["--model-option", "hidden=[1000000000]", "--out", str(tmp_path / "o")]) == 2
    assert "would need about" in _err(capsys)
    assert main(TRAIN + ["--model-option", "hidden=[-5]", "--out", str(tmp_path / "o")]) == 2
    assert "must be a positive integer" in _err(capsys)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # (tests may run as root)
    assert main(TRAIN + ["--out", str(tmp_path / "o")]) == 2
    assert "not writable" in _err(capsys)
    assert not (tmp_path / "o").exists()


def test_train_never_replaces_a_finished_run_silently(cli_run, tmp_path, capsys):
    run = shutil.copytree(cli_run, tmp_path / "run")
    before = (run / "metrics.json").read_text()
    assert main(TRAIN + ["--lr", "1e12", "--out", str(run)]) == 2
    assert "holds a finished result" in _err(capsys) and (run / "metrics.json").read_text() == before
    assert main(TRAIN + ["--seed", "5", "--overwrite", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 5


def test_evaluate_prune_and_compress_refuse_an_unfinished_run(cli_run, tmp_path, capsys):
    run = shutil.copytree(cli_run, tmp_path / "run")
    (run / "COMPLETE").unlink()
    assert main(["evaluate", str(run)]) == 2
    assert "--resume" in _err(capsys)
    for command in (["prune", str(run), "--sparsity", "0.5"], ["compress", str(run)]):
        assert main(command + ["--no-latency", "--out", str(tmp_path / "p")]) == 2
        assert "unfinished run" in _err(capsys)
    assert not (tmp_path / "p").exists()


def test_nan_weights_are_refused_by_evaluate_and_prune(cli_run, tmp_path, capsys):
    from pyrocompress.runs import load_checkpoint, save_checkpoint

    run = shutil.copytree(cli_run, tmp_path / "run")
    tensors, meta = load_checkpoint(run / "checkpoint.safetensors")
    tensors = {k: v.fill_(float("nan")) if k.startswith("guide.loc.") else v for k, v in tensors.items()}
    save_checkpoint(run / "checkpoint.safetensors", tensors, meta)
    assert main(["evaluate", str(run)]) == 2
    assert "non-finite" in _err(capsys)
    assert main(["prune", str(run), "--sparsity", "0.5", "--no-latency", "--out", str(tmp_path / "p")]) == 2
    assert "non-finite" in _err(capsys) and not (tmp_path / "p").exists()


def test_prune_never_writes_into_its_source_nor_leaves_a_stale_export(cli_run, tmp_path, capsys):
    run = shutil.copytree(cli_run, tmp_path / "run")
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for command in ("prune", "compress"):
        assert main([command, str(run), "--sparsity", "0.5", "--no-latency", "--out", str(run)]) == 2
        assert "is the source" in _err(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
    out = tmp_path / "pruned"
    common = ["--sparsity", "0.5", "--no-latency", "--eval-samples", "2", "--out", str(out)]
    assert main(["prune", str(run)] + common) == 0
    assert (out / "bayesian").is_dir() and (out / "COMPLETE").is_file()
    det = tmp_path / "det"
    assert main(TRAIN + ["--deterministic", "--out", str(det)]) == 0
    assert main(["prune", str(det), "--method", "magnitude"] + common) == 2
    assert "holds a finished result" in _err(capsys)
    capsys.readouterr()
    assert main(["prune", str(det), "--method", "magnitude", "--overwrite"] + common) == 0
    assert not (out / "bayesian").exists()  # the other source's export is gone with the rest
    assert json.loads((out / "metrics.json").read_text())["run"] == str(det)


def test_evaluate_a_read_only_run_prints_and_says_where_nothing_was_written(cli_run, capsys, monkeypatch, tmp_path):
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).startswith(str(cli_run)) else
                        real(path, mode))
    assert main(["evaluate", str(cli_run), "--samples", "2"]) == 0
    out = capsys.readouterr()
    assert "re-evaluated" in out.out and "read-only" in out.err and "--out" in out.err
    assert not (cli_run / "evaluation.json").exists()
    assert main(["evaluate", str(cli_run), "--samples", "2", "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] >= 0


def test_only_the_packages_errors_are_one_line_a_bug_shows_its_traceback(monkeypatch, capsys):
    import pyrocompress.cli as cli

    def buggy(args):
        return {}["missing"]  # a KeyError: a bug, not the user's fault

    monkeypatch.setattr(cli, "_cmd_evaluate", buggy)
    with pytest.raises(KeyError):
        main(["evaluate", "somewhere"])

    def numpy_value_error(args):
        raise ValueError("operands could not be broadcast together")  # not a pyrocompress error: a bug

    monkeypatch.setattr(cli, "_cmd_evaluate", numpy_value_error)
    with pytest.raises(ValueError, match="broadcast"):
        main(["evaluate", "somewhere"])

    def disk_full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/results/run/checkpoint.safetensors")

    monkeypatch.setattr(cli, "_cmd_evaluate", disk_full)
    assert main(["evaluate", "somewhere"]) == 2
    assert "No space left on device: /results/run/checkpoint.safetensors" in _err(capsys)


def _parsers(parser, path=()):
    """Every (command path, parser) of the CLI, the top-level one included."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_option_of_every_command_has_help_and_shows_its_default():
    import argparse

    from pyrocompress.cli import HelpFormatter, build_parser

    seen = 0
    for path, parser in _parsers(build_parser()):
        assert parser.formatter_class is HelpFormatter, path
        text = parser.format_help()
        assert "``" not in text and ":func:" not in text and ":mod:" not in text, path  # plain text, no markup
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            seen += 1
            shown = HelpFormatter("pyrocompress")._get_help_string(action)
            assert action.help, f"{' '.join(path)} {action.option_strings or action.dest} has no help text"
            if action.option_strings and action.nargs != 0 and not action.required:
                assert "default" in shown.lower(), f"{' '.join(path)} {action.option_strings} hides its default"
    assert seen > 100


def test_version_and_plain_top_level_help(capsys):
    import pytest

    import pyrocompress

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyrocompress {pyrocompress.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "pyrocompress: Bayesian neural networks" in text and "``" not in text
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = capsys.readouterr().out
    assert "--onnx, --no-onnx" in text and "(default: 50)" in text and "--quiet" in text
