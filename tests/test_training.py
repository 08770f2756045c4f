"""training: TrainConfig checks its fields at the edge; init_from starts from a trained twin and counts it."""
import pytest
import torch

from pyrocompress.runs import RunError, load_run
from pyrocompress.training import TrainConfig, train


def test_unknown_and_bad_fields_are_named():
    with pytest.raises(ValueError, match=r"unknown training options \['epoch'\]; valid options"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(lr=-1.0).validate()
    with pytest.raises(ValueError, match="scale_lr must be positive"):
        TrainConfig(scale_lr=0.0).validate()
    assert TrainConfig.from_dict(TrainConfig(epochs=2).to_dict()).epochs == 2


def test_init_from_starts_the_guide_at_the_twin_and_counts_its_epochs(digits, tmp_path):
    common = dict(dataset="digits", model="mlp", model_options={"hidden": [8]}, limit=200, device="cpu", seed=1)
    twin = train(TrainConfig(deterministic=True, epochs=2, **common), data=digits, out=tmp_path / "twin")
    # with 0 training epochs of its own the guide's means would be the twin's; check through one short run
    bnn = train(TrainConfig(epochs=1, lr=1e-9, init_from=str(tmp_path / "twin"), **common), data=digits,
                out=tmp_path / "bnn")
    assert bnn.metrics["pretrain_epochs"] == 2 and bnn.metrics["epochs"] == 1 and bnn.metrics["total_epochs"] == 3
    torch.testing.assert_close(bnn.guide.loc_of("fc1.weight").detach(), twin.net.fc1.weight.detach(), atol=1e-5,
                               rtol=0)
    assert load_run(tmp_path / "bnn").config["train"]["init_from"] == str(tmp_path / "twin")
    again = train(TrainConfig(epochs=1, init_from=str(tmp_path / "bnn"), **common), data=digits)  # chained
    assert again.metrics["pretrain_epochs"] == 3
    with pytest.raises(RunError, match="another architecture"):
        train(TrainConfig(epochs=1, init_from=str(tmp_path / "twin"),
                          **dict(common, model_options={"hidden": [9]})), data=digits)


# ----------------------------------------------------------------- results that survive (issue 14)
class _Killed(BaseException):
    """Stands for the process dying right after an epoch's state was written."""


def _interrupt_after(monkeypatch, epoch):
    import pyrocompress.training as training

    real = training._save_state

    def save_then_die(out, cfg, data, weights, loop, pretrain_epochs):
        real(out, cfg, data, weights, loop, pretrain_epochs)
        if loop.epoch == epoch:
            raise _Killed()

    monkeypatch.setattr(training, "_save_state", save_then_die)


def _tensors(run_dir):
    from pyrocompress.runs import load_checkpoint

    return load_checkpoint(run_dir / "checkpoint.safetensors")[0]


def _history(run):
    return [{k: v for k, v in row.items() if k not in ("seconds", "val_seconds", "val_share")} for row in run.history]


@pytest.mark.parametrize("options", [
    dict(lr_schedule="cosine", kl_anneal_epochs=2, patience=3),
    dict(deterministic=True, lr_schedule="step", optimizer="sgd"),
], ids=["bayesian", "deterministic"])
def test_resume_continues_exactly_where_the_last_epoch_ended(digits, tmp_path, monkeypatch, options):
    cfg = dict(dataset="digits", model="mlp", model_options={"hidden": [16]}, epochs=4, lr=0.01, limit=400,
               device="cpu", seed=3, eval_samples=4, **options)
    whole = train(TrainConfig(**cfg), data=digits, out=tmp_path / "whole")
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(_Killed):
        train(TrainConfig(**cfg), data=digits, out=tmp_path / "cut")
    monkeypatch.undo()
    assert (tmp_path / "cut" / "train_state.safetensors").is_file() and not (tmp_path / "cut" / "COMPLETE").exists()
    with pytest.raises(RunError, match="unfinished"):
        load_run(tmp_path / "cut")
    resumed = train(TrainConfig(**cfg), data=digits, out=tmp_path / "cut", resume=True)
    assert resumed.resumed_after == 2 and resumed.metrics["epochs"] == 4
    a, b = _tensors(tmp_path / "whole"), _tensors(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _history(whole) == _history(resumed)
    assert resumed.metrics["accuracy"] == whole.metrics["accuracy"]
    assert not (tmp_path / "cut" / "train_state.safetensors").exists() and (tmp_path / "cut" / "COMPLETE").is_file()


def test_resume_refuses_other_options_and_says_how(digits, tmp_path, monkeypatch):
    from pyrocompress.errors import OutputError

    cfg = dict(dataset="digits", model="mlp", model_options={"hidden": [8]}, epochs=3, limit=200, device="cpu")
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(_Killed):
        train(TrainConfig(**cfg), data=digits, out=tmp_path / "run")
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"--resume: .* was started with other options \(lr: 0.001 then, 0.1 now\)"):
        train(TrainConfig(**dict(cfg, lr=0.1)), data=digits, out=tmp_path / "run", resume=True)
    with pytest.raises(OutputError, match="unfinished result.*--resume.*--overwrite"):
        train(TrainConfig(**cfg), data=digits, out=tmp_path / "run")  # neither --resume nor --overwrite
    done = train(TrainConfig(**cfg), data=digits, out=tmp_path / "run", resume=True)
    assert done.resumed_after == 1
    with pytest.raises(OutputError, match="holds a finished result"):
        train(TrainConfig(**cfg), data=digits, out=tmp_path / "run", resume=True)


def test_a_finished_run_is_never_replaced_silently(digits, tmp_path):
    from pyrocompress.errors import DivergenceError, OutputError

    cfg = dict(dataset="digits", model="mlp", model_options={"hidden": [8]}, epochs=1, limit=200, device="cpu")
    train(TrainConfig(**cfg), data=digits, out=tmp_path / "run")
    before = (tmp_path / "run" / "metrics.json").read_text()
    with pytest.raises(OutputError, match="holds a finished result.*--overwrite"):
        train(TrainConfig(**dict(cfg, lr=1e12)), data=digits, out=tmp_path / "run")
    assert (tmp_path / "run" / "metrics.json").read_text() == before
    assert load_run(tmp_path / "run").metrics["accuracy"] > 0
    # asked to overwrite, a diverging run leaves an unfinished run, never the old metrics beside a new checkpoint
    with pytest.raises(DivergenceError):
        train(TrainConfig(**dict(cfg, lr=1e12, optimizer="sgd")), data=digits, out=tmp_path / "run", overwrite=True)
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "COMPLETE").exists()
    with pytest.raises(RunError, match="unfinished"):
        load_run(tmp_path / "run")


def test_init_from_is_never_the_output(digits, tmp_path):
    from pyrocompress.errors import OutputError

    cfg = dict(dataset="digits", model="mlp", model_options={"hidden": [8]}, epochs=1, limit=200, device="cpu")
    train(TrainConfig(deterministic=True, **cfg), data=digits, out=tmp_path / "twin")
    with pytest.raises(OutputError, match="is the source"):
        train(TrainConfig(init_from=str(tmp_path / "twin"), **cfg), data=digits, out=tmp_path / "twin",
              overwrite=True)
    assert load_run(tmp_path / "twin").net is not None


def test_absurd_or_negative_sizes_are_refused_before_allocating(monkeypatch):
    from pyrocompress.errors import TooLargeError

    monkeypatch.setenv("PYROCOMPRESS_MAX_MEMORY", str(8 << 30))
    with pytest.raises(TooLargeError, match=r"training mlp .*\(75,000,000,010 parameters\) would need about"):
        TrainConfig(model_options={"hidden": [1000000000]}).validate()
    with pytest.raises(ValueError, match=r"hidden=\[-5\] must be a positive integer"):
        TrainConfig(model_options={"hidden": [-5]}).validate()
