"""The device of a study: not part of its identity (recorded per trial), chosen by --device, and every input a
measurement feeds a network goes to that network's device (checked on torch's meta device, no GPU needed)."""
import json

import pandas as pd
import pytest
import torch

from pyrocompress.nn import build_model
from pyrocompress.prune.methods import Pruned
from pyrocompress.study.cli import _cmd_study  # noqa: F401 - the command the CLI test below runs
from pyrocompress.study.config import copy_config, parse_config
from pyrocompress.study.measure import device_of, probs_of
from pyrocompress.study.runner import run_study
from pyrocompress.study.store import ResultsStore

from conftest import TINY


def test_the_device_is_not_part_of_the_study_identity():
    cfg = parse_config(TINY)
    assert "device" not in cfg.to_dict()
    assert copy_config(cfg, device="cuda").config_hash() == cfg.config_hash()


def test_a_study_started_under_the_old_hash_resumes_and_trials_record_their_device(tmp_path):
    cfg = parse_config(TINY.replace("seeds = [0, 1]", "seeds = [5]"))
    out = tmp_path / "s"
    ResultsStore(out).open({**cfg.to_dict(), "device": "cpu"}, "0123456789abcdef")  # as earlier versions wrote it
    result = run_study(copy_config(cfg, device="auto"), out, progress=False, max_trials=2)
    assert result.ok and result.ran == 2
    meta = json.loads((out / "study.json").read_text())
    assert meta["config_hash"] == cfg.config_hash() and meta["previous_config_hash"] == "0123456789abcdef"
    table = pd.read_csv(out / "results.csv")
    assert (table["device"] == "cpu").all()  # auto, resolved where the trial ran
    assert "macs" in table and "flops" not in table


def test_a_plain_network_on_another_device_gets_its_inputs_there():
    """meta: shapes only. The CPU test inputs are moved to the network's device before it runs."""
    net = build_model("mlp", (1, 8, 8), 10, hidden=[16]).to("meta")
    pruned = Pruned(net=net)
    assert device_of(pruned).type == "meta"
    probs = probs_of(pruned, torch.zeros(5, 1, 8, 8), samples=2, seed=0)
    assert probs.device.type == "meta" and probs.shape == (5, 10)


def test_study_device_flag_and_gpu_options_are_checked_at_the_edge(tmp_path, tiny_toml, capsys):
    from pyrocompress.cli import main

    assert main(["study", str(tiny_toml), "--device", "tpu", "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "--device 'tpu'" in capsys.readouterr().err
    assert main(["study", str(tiny_toml), "--gpus-per-trial", "1", "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "--gpus-per-trial is for --executor ray" in capsys.readouterr().err
    assert main(["study", str(tiny_toml), "--executor", "ray", "--address", "nowhere", "--out", str(tmp_path / "c"),
                 "--quiet"]) == 2
    assert "is not a Ray address" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_gpus_per_trial_follow_the_device():
    from pyrocompress.study.runner import _device_plan

    assert _device_plan("cpu", None) == 0.0 and _device_plan("cuda", None) == 1.0
    assert _device_plan("cuda:1", 0.25) == 0.25
    with pytest.raises(ValueError, match="needs the study's device to be cuda"):
        _device_plan("cpu", 0.5)
    with pytest.raises(ValueError, match="gpus-per-trial > 0"):
        _device_plan("cuda", 0)
    with pytest.raises(ValueError, match=">= 0"):
        _device_plan("cuda", -1)
