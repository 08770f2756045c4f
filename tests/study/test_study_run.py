"""End to end: a tiny study writes its store and reports, resumes, records failures, refuses mixing."""
import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pyrocompress.data import DataError
from pyrocompress.prune.methods.magnitude import Magnitude
from pyrocompress.study.config import load_config, parse_config
from pyrocompress.study.report import write_report
from pyrocompress.study.runner import run_study
from pyrocompress.study.store import DIMS, ResultsStore, StoreError, read_results

from conftest import TINY, TINY_TRIALS

#: whole (tiny) studies
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "tiny"
    result = run_study(parse_config(TINY), out, progress=False)
    return out, result


def test_tiny_study_end_to_end(tiny_study):
    out, result = tiny_study
    assert result.ok and result.ran == TINY_TRIALS and result.total == TINY_TRIALS
    table = pd.read_csv(out / "results.csv")
    assert len(table) == TINY_TRIALS and table["trial_id"].is_unique
    assert (table["status"] == "ok").all()
    for col in ("accuracy", "nll", "ece", "brier", "agreement", "tv_distance", "kl_to_dense", "ood_auroc",
                "params", "nonzero_params", "compression", "macs", "speedup", "bytes_dense", "epochs", "seconds"):
        assert table[col].notna().all(), col
    dense = table[table["method"].str.startswith("dense")]
    assert np.allclose(dense["agreement"], 1.0) and np.allclose(dense["compression"], 1.0)
    pruned = table[~table["method"].str.startswith("dense")]
    # unstructured pruning reaches the target ratio over all parameters (biases included), up to ties
    assert ((pruned["compression"] > 0.97 * pruned["target_compression"])
            & (pruned["compression"] < 1.03 * pruned["target_compression"])).all()
    assert (pruned.groupby("operating_point")["compression"].mean().loc["8x"] >
            pruned.groupby("operating_point")["compression"].mean().loc["2x"])
    # each trained network is trained once and reused: one run per (seed, kind)
    runs = sorted(p.relative_to(out / "runs").as_posix() for p in (out / "runs").glob("*/*/*/*"))
    assert runs == ["digits/mlp/seed0/bayesian", "digits/mlp/seed0/deterministic",
                    "digits/mlp/seed1/bayesian", "digits/mlp/seed1/deterministic"]
    assert (out / "runs/digits/mlp/seed0/deterministic/init.safetensors").is_file()
    assert len(list((out / "logs").glob("*.log"))) == TINY_TRIALS + 4
    paths = write_report(out)
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") >= 6 and "within 0.5" in html
    md = paths["markdown"].read_text()
    assert "![" in md and all((paths["figures"] / name).is_file()
                              for name in ("accuracy.png", "ece.png", "nll.png", "speedup.png", "norms.png",
                                           "layer_sparsity.png"))


def test_results_dataset_dims_and_netcdf_round_trip(tiny_study, tmp_path):
    out, _ = tiny_study
    ds = read_results(out)
    assert ds["accuracy"].dims == DIMS
    assert ds["layer_sparsity"].dims == DIMS + ("layer",)
    assert list(ds["method"].values) == ["dense-bayesian", "dense-deterministic", "bnn-snr", "magnitude"]
    assert list(ds["operating_point"].values) == ["1x", "2x", "8x"]
    assert list(ds["seed"].values) == [0, 1]
    assert list(ds["target_compression"].values) == [1.0, 2.0, 8.0]
    # "method" is also a keyword of .sel(): select it with a dict
    # cells that exist: dense at 1x, methods at 2x and 8x; the others are NaN
    acc = ds["accuracy"].sel(dataset="digits", model="mlp")
    assert acc.sel({"method": "magnitude", "operating_point": "1x"}).isnull().all()
    assert acc.sel({"method": "magnitude", "operating_point": "8x"}).notnull().all()
    table = pd.read_csv(out / "results.csv").set_index("trial_id")
    v = float(acc.sel({"method": "bnn-snr", "operating_point": "2x", "seed": 1}))
    assert v == pytest.approx(table.loc["digits__mlp__s1__bnn-snr__2x", "accuracy"])
    path = tmp_path / "copy.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    back = xr.open_dataset(path, engine="h5netcdf").load()
    xr.testing.assert_identical(ds, back)


def test_rerun_skips_finished_and_other_config_is_refused(tiny_study):
    out, _ = tiny_study
    again = run_study(parse_config(TINY), out, progress=False)
    assert again.ran == 0 and again.skipped == TINY_TRIALS
    with pytest.raises(StoreError, match="another study configuration.*grid.*delete"):
        run_study(parse_config(TINY.replace("[2, 8]", "[2, 4]")), out, progress=False)


def test_a_failing_trial_is_recorded_and_the_others_complete(tmp_path, monkeypatch):
    real = Magnitude.run

    def flaky(self, ctx, target):
        if target.ratio == 8:
            raise RuntimeError("deliberate failure at 8x")
        return real(self, ctx, target)

    monkeypatch.setattr(Magnitude, "run", flaky)
    cfg = parse_config(TINY.replace("seeds = [0, 1]", "seeds = [0]"))
    result = run_study(cfg, tmp_path / "s", progress=False)
    assert result.failed == ["digits__mlp__s0__magnitude__8x"]
    rows = {r["trial_id"]: r for r in ResultsStore(tmp_path / "s").rows()}
    assert len(rows) == TINY_TRIALS // 2
    bad = rows["digits__mlp__s0__magnitude__8x"]
    assert bad["status"] == "error" and "deliberate failure at 8x" in bad["error"]
    assert all(r["status"] == "ok" for k, r in rows.items() if k != bad["trial_id"])
    assert "deliberate failure" in (tmp_path / "s/logs/digits__mlp__s0__magnitude__8x.log").read_text()
    # the next run retries only the failed trial
    monkeypatch.setattr(Magnitude, "run", real)
    again = run_study(cfg, tmp_path / "s", progress=False)
    assert again.ran == 1 and again.ok
    assert ResultsStore(tmp_path / "s").rows()[0]["status"] == "ok"
    assert read_results(tmp_path / "s")["status"].sel({"method": "magnitude", "operating_point": "8x"}).item() == "ok"


def test_missing_data_fails_before_training(tmp_path):
    from pyrocompress.data import find_idx_files

    if find_idx_files("mnist") is not None:
        pytest.skip("the MNIST files are installed here, so they cannot be missing")
    cfg = parse_config(TINY.replace('name = "digits"\nlimit = 300',
                                    f'name = "mnist"\ndata_dir = "{tmp_path / "empty"}"\ndownload = false'))
    with pytest.raises(DataError, match="not found"):
        run_study(cfg, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_dataset_orders_points_and_keeps_automatic_ones():
    from pyrocompress.study.store import trial_dataset

    base = {"dataset": "d", "model": "m", "seed": 0, "status": "ok"}
    rows = [dict(base, trial_id="a", method="sc", operating_point="auto", target_compression=None, accuracy=0.7),
            dict(base, trial_id="b", method="mag", operating_point="4x", target_compression=4.0, accuracy=0.8),
            dict(base, trial_id="c", method="mag", operating_point="2x", target_compression=2.0, accuracy=0.9)]
    ds = trial_dataset(rows)
    assert list(ds["operating_point"].values) == ["2x", "4x", "auto"]
    assert np.isnan(ds["target_compression"].values[-1])
    assert float(ds["accuracy"].sel({"method": "sc", "operating_point": "auto"}).squeeze()) == 0.7


TRAJECTORY = TINY.replace('seeds = [0, 1]', 'seeds = [5]\neval_estimator = "weight_sampling"').replace(
    '[[methods]]\nname = "bnn-snr"\nfamily = "bayes"\nscore = "snr"\n',
    '[[methods]]\nname = "lottery"\nfamily = "lottery"\nrounds = 1\nschedule = "trajectory"\n')


def test_lottery_trajectory_trials_share_their_rounds_and_workers_agree(tmp_path):
    cfg = parse_config(TRAJECTORY)
    assert cfg.eval_estimator == "weight_sampling"
    one = run_study(cfg, tmp_path / "one", workers=1, progress=False)
    two = run_study(cfg, tmp_path / "two", workers=2, progress=False)
    assert one.ok and two.ok
    for out in (tmp_path / "one", tmp_path / "two"):
        table = pd.read_csv(out / "results.csv").set_index("trial_id")
        lot = table[table["method"] == "lottery"].set_index("operating_point")
        # 2x: one round of 1 epoch; 8x: the same round, then one more
        assert lot.loc["2x", "finetune_epochs"] == 1 and lot.loc["8x", "finetune_epochs"] == 2
        assert lot.loc["8x", "compression"] == pytest.approx(8.0, rel=0.02)
        rounds = sorted(p.name for p in out.rglob("cache/lottery/*/round*.safetensors"))
        assert rounds == ["round1.safetensors", "round2.safetensors"]  # each round trained once
        assert not list(out.rglob("*.lock"))
        assert list(out.rglob("cache/dense_probs__weight_sampling__s4__*.safetensors"))
        assert json.loads((out / "study.json").read_text())["config"]["eval_estimator"] == "weight_sampling"
    cols = ["accuracy", "nll", "compression", "agreement"]
    a = pd.read_csv(tmp_path / "one" / "results.csv").set_index("trial_id").sort_index()[cols]
    b = pd.read_csv(tmp_path / "two" / "results.csv").set_index("trial_id").sort_index()[cols]
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=0)


def test_eval_estimator_and_lottery_schedule_are_validated():
    from pyrocompress.study.config import StudyConfigError

    with pytest.raises(StudyConfigError, match=r"study\.eval_estimator.*valid.*weight_sampling"):
        parse_config(TRAJECTORY.replace('"weight_sampling"', '"mean"'))
    with pytest.raises(StudyConfigError, match=r"schedule.*valid.*trajectory"):
        parse_config(TRAJECTORY.replace('schedule = "trajectory"', 'schedule = "zigzag"'))


def test_auto_eval_estimator_predicts_a_moment_propagation_run_with_its_own_moments(tmp_path, monkeypatch):
    import pyrocompress.infer.predictive as predictive

    text = TINY.replace('seeds = [0, 1]', 'seeds = [2]').replace(
        "[grid]", '[bayesian]\nestimator = "moment_propagation:relu=taylor"\n\n[grid]').replace(
        '[[methods]]\nname = "magnitude"\nfamily = "magnitude"\n', '')
    cfg = parse_config(text)
    assert cfg.eval_estimator == "auto"
    used = []
    real = predictive.predictive_probs
    monkeypatch.setattr(predictive, "predictive_probs", lambda *a, **k: used.append(k.get("estimator")) or real(*a, **k))
    result = run_study(cfg, tmp_path / "mp", progress=False)
    assert result.ok
    assert set(used) == {"moment_propagation:relu=taylor"}  # never the local-reparameterization draws
    assert list((tmp_path / "mp").rglob("cache/dense_probs__moment_propagation_relu=taylor__s4__*.safetensors"))


def test_a_truncated_record_is_counted_named_and_redone(tiny_study, tmp_path, capsys):
    import shutil

    from pyrocompress.cli import main

    out = shutil.copytree(tiny_study[0], tmp_path / "copy")
    victim = sorted((out / "trials").glob("*.json"))[0]
    victim.write_bytes(victim.read_bytes()[:40])  # damaged outside pyrocompress (its writes are atomic)
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr()
    assert (f"{TINY_TRIALS - 1} finished trials, 0 failed, 1 with an unreadable record ({victim.stem}) of "
            f"{TINY_TRIALS} planned") in printed.out
    assert f"cannot be read ({victim.stem})" in printed.err
    assert "1 with an unreadable record" in (out / "report" / "report.md").read_text()
    again = run_study(parse_config(TINY), out, progress=False)
    assert again.ran == 1 and again.ok
    assert json.loads(victim.read_text())["status"] == "ok"


def test_study_flags_and_config_path_are_checked_first(tiny_toml, tmp_path, capsys):
    from pyrocompress.cli import main

    for flag in ("--threads", "--max-trials", "--workers"):
        for value in ("0", "-1"):
            with pytest.raises(SystemExit) as exit_:
                main(["study", str(tiny_toml), "--out", str(tmp_path / "s"), flag, value])
            assert exit_.value.code == 2 and f"{flag}: must be a positive integer" in capsys.readouterr().err
    assert main(["study", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert "is a folder; give the TOML file in it" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="max_trials must be a positive integer"):
        run_study(parse_config(TINY), tmp_path / "s", max_trials=-1, progress=False)


def test_model_options_of_a_study_are_checked_when_it_is_read():
    from pyrocompress.study.config import StudyConfigError

    for options, message in (("{ hiden = [24] }", "has no option 'hiden'"),
                             ("{ hidden = [-5] }", "must be a positive integer"),
                             ("{ hidden = [1000000000] }", "would need about")):
        with pytest.raises(StudyConfigError, match=rf"models\[0\]\.options \(line 14\): .*{message}"):
            parse_config(TINY.replace("{ hidden = [24, 24] }", options))
