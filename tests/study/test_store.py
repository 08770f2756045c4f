"""The results store: one atomic record per trial, bound to one configuration, views rebuilt from records."""
import json
import math

import numpy as np
import pytest

from pyrocompress.study.store import DIMS, ResultsStore, StoreError, trial_dataset


def _row(trial_id, method="mag", point="2x", **metrics):
    return {"trial_id": trial_id, "dataset": "d", "model": "m", "seed": 0, "method": method, "family": "magnitude",
            "kind": "deterministic", "recipe": "deterministic", "operating_point": point,
            "target_compression": 2.0, "status": "ok", **metrics}


def test_records_round_trip_and_nan_becomes_null(tmp_path):
    store = ResultsStore(tmp_path / "s").open({"name": "x"}, "abc")
    store.record(_row("a", accuracy=0.9, nll=math.nan, layers={"fc": {"params": 4, "nonzero": 2}}))
    store.record(_row("a", accuracy=0.8))  # a later record of the same trial replaces it
    store.record(_row("b", point="4x", accuracy=0.7))
    assert [r["trial_id"] for r in store.rows()] == ["a", "b"] and store.rows()[0]["accuracy"] == 0.8
    assert store.finished() == {"a": "ok", "b": "ok"}
    store.record(_row("c", nll=math.nan))
    assert json.loads((tmp_path / "s" / "trials" / "c.json").read_text())["nll"] is None
    table = store.table()
    assert {"recipe", "pretrain_epochs", "epochs"} <= set(table.columns) and len(table) == 3


def test_another_configuration_or_a_foreign_folder_is_refused(tmp_path):
    ResultsStore(tmp_path / "s").open({"name": "x", "grid": [2]}, "abc")
    with pytest.raises(StoreError, match="another study configuration.*grid"):
        ResultsStore(tmp_path / "s").open({"name": "x", "grid": [4]}, "def")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="not an empty or pyrocompress study directory"):
        ResultsStore(tmp_path / "other").open({}, "abc")
    with pytest.raises(StoreError, match="no study.json"):
        ResultsStore(tmp_path / "nowhere").meta()


def test_dataset_has_the_dims_and_nan_where_no_trial_ran():
    ds = trial_dataset([_row("a", accuracy=0.9, layers={"fc": {"params": 4, "nonzero": 1}}),
                        _row("b", method="rnd", point="4x", accuracy=0.5)])
    assert ds["accuracy"].dims == DIMS
    assert np.isnan(ds["accuracy"].sel({"method": "rnd", "operating_point": "2x"}).values).all()
    assert float(ds["layer_sparsity"].sel({"method": "mag", "operating_point": "2x", "layer": "fc"}).squeeze()) == 0.75


def test_an_error_never_replaces_a_finished_record(tmp_path):
    store = ResultsStore(tmp_path / "s").open({"name": "x"}, "h")
    store.record({"trial_id": "t1", "status": "ok", "accuracy": 0.9})
    store.record({"trial_id": "t1", "status": "error", "error": "BrokenProcessPool"})
    assert store.rows()[0]["status"] == "ok" and store.rows()[0]["accuracy"] == 0.9
    store.record({"trial_id": "t2", "status": "error", "error": "first"})
    store.record({"trial_id": "t2", "status": "ok", "accuracy": 0.5})  # a retry that worked replaces the error
    assert store.finished() == {"t1": "ok", "t2": "ok"}


def test_unreadable_records_are_named_not_skipped_silently(tmp_path):
    store = ResultsStore(tmp_path / "s").open({"name": "x"}, "h")
    store.record({"trial_id": "good", "status": "ok"})
    (store.trials_dir / "cut.json").write_text('{"trial_id": "cut", "sta')
    (store.trials_dir / "alien.json").write_text('{"trial_id": "someone-else"}')
    assert [r["trial_id"] for r in store.rows()] == ["good"]
    assert store.unreadable() == ["alien", "cut"] and "cut" not in store.finished()
