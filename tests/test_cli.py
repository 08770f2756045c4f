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
