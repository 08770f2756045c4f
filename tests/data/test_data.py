"""Data: digits, IDX reading and validation, look-up order, verified downloads, array input checks."""
import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from pyrocompress.data import (Batches, DataError, download_idx_files, find_idx_files, from_arrays, load_dataset,
                               read_idx)


def _write_idx(path, array: np.ndarray, compress=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)
    return raw


def _fake_idx_set(folder, n_train=30, n_test=12):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (n_train, 28, 28)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (n_test, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))


def test_digits_is_split_normalised_and_reproducible():
    a = load_dataset("digits", seed=1)
    b = load_dataset("digits", seed=1)
    c = load_dataset("digits", seed=2)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.train.y, b.train.y) and not torch.equal(a.train.y, c.train.y)
    assert torch.equal(a.test.y, c.test.y)  # the test split does not depend on the seed
    assert abs(float(a.train.x.mean())) < 1e-4 and abs(float(a.train.x.std()) - 1) < 1e-3


def test_idx_reader_validates_magic_dims_and_size(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "ok.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "ok.gz"), arr)
    raw = _write_idx(tmp_path / "plain", arr, compress=False)
    (tmp_path / "truncated").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "truncated")
    (tmp_path / "magic").write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="corrupt"):
        read_idx(tmp_path / "bad.gz")


def test_lookup_order_data_dir_then_environment(tmp_path, monkeypatch):
    _fake_idx_set(tmp_path / "explicit")
    _fake_idx_set(tmp_path / "env" / "mnist", n_train=40)
    monkeypatch.setenv("PYROCOMPRESS_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert find_idx_files("mnist", tmp_path / "explicit") == tmp_path / "explicit"
    assert find_idx_files("mnist") == tmp_path / "env" / "mnist"
    data = load_dataset("mnist", val_fraction=0.25, download=False)
    assert len(data.train) + len(data.val) == 40 and data.input_shape == (1, 28, 28)


def test_missing_data_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("PYROCOMPRESS_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match="not found.*looked in"):
        load_dataset("mnist", tmp_path / "nowhere", download=False)


def test_download_verifies_checksums(tmp_path):
    mirror = tmp_path / "mirror"
    _fake_idx_set(mirror)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in mirror.iterdir()}
    target = download_idx_files("mnist", tmp_path / "got", mirrors=[mirror.as_uri() + "/"], md5=md5)
    assert sorted(p.name for p in target.iterdir()) == sorted(md5)
    wrong = dict(md5, **{"train-images-idx3-ubyte.gz": "0" * 32})
    with pytest.raises(DataError, match="checksum mismatch"):
        download_idx_files("mnist", tmp_path / "bad", mirrors=[mirror.as_uri() + "/"], md5=wrong)
    assert not (tmp_path / "bad" / "train-images-idx3-ubyte.gz").exists()  # nothing half-written


def test_from_arrays_validates_input():
    x, y = np.random.rand(20, 4), np.arange(20) % 3
    data = from_arrays(x, y)
    assert data.num_classes == 3 and data.input_shape == (1, 1, 4)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        from_arrays(bad, y)
    with pytest.raises(DataError, match="out of range"):
        from_arrays(x, y, num_classes=2)
    with pytest.raises(DataError, match="integers"):
        from_arrays(x, y.astype(float))
    with pytest.raises(DataError, match="empty"):
        from_arrays(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(DataError, match="labels"):
        from_arrays(x, y[:5])
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("cifar")


def test_batches_cover_every_example_once_per_epoch():
    data = from_arrays(np.random.rand(50, 3), np.arange(50) % 2, val_fraction=0.0)
    batches = Batches(data.train, 16, seed=4)
    seen = torch.cat([yb for _, yb in batches])
    assert len(batches) == 4 and seen.shape[0] == 50
    first = torch.cat([xb for xb, _ in Batches(data.train, 16, seed=4)])
    again = torch.cat([xb for xb, _ in Batches(data.train, 16, seed=4)])
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="batch_size"):
        Batches(data.train, 0)
