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


# ----------------------------------------------------------------- results that survive (issue 14)
def _labelled_idx_set(folder, train_labels, test_labels, n_train=60000, n_test=10000):
    """An IDX set whose label files start as given (images tiny placeholders are not read by recognition)."""
    folder.mkdir(parents=True, exist_ok=True)
    ytr = np.zeros(n_train, dtype=np.uint8)
    ytr[:len(train_labels)] = train_labels
    yte = np.zeros(n_test, dtype=np.uint8)
    yte[:len(test_labels)] = test_labels
    _write_idx(folder / "train-labels-idx1-ubyte.gz", ytr)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", yte)
    _write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((n_train, 28, 28), dtype=np.uint8))
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((n_test, 28, 28), dtype=np.uint8))


FASHION = ((9, 0, 0, 3, 0, 2, 7, 2, 5, 5), (9, 2, 1, 1, 6, 1, 4, 6, 5, 7))
MNIST = ((5, 0, 4, 1, 9, 2, 1, 3, 1, 4), (7, 2, 1, 0, 4, 1, 4, 9, 5, 9))


def test_mnist_and_fashion_mnist_are_recognised_by_content(tmp_path, monkeypatch):
    from pyrocompress.data import recognise_idx, resolve_ood

    shared = tmp_path / "shared"
    _labelled_idx_set(shared, *FASHION)
    assert recognise_idx(shared) == "fashion-mnist"
    monkeypatch.setenv("PYROCOMPRESS_DATA", str(shared))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # the shared folder holds Fashion-MNIST: it is never taken for MNIST (same file names)
    assert find_idx_files("fashion-mnist") == shared and find_idx_files("mnist") is None
    with pytest.raises(DataError, match=r"passed over: .*shared holds fashion-mnist, not mnist"):
        load_dataset("mnist", download=False)
    assert resolve_ood("fashion-mnist", "auto") == "rot90"  # not "mnist": that would be the test set itself
    # nor a data_dir the user gives for MNIST that holds Fashion-MNIST
    with pytest.raises(DataError, match="holds fashion-mnist, not mnist"):
        load_dataset("mnist", shared, download=True)
    assert sorted(p.name for p in shared.iterdir()) == sorted(_IDX_NAMES)  # nothing downloaded over it
    # unrecognisable files in the shared folder are not taken for either
    _fake_idx_set(tmp_path / "other")
    monkeypatch.setenv("PYROCOMPRESS_DATA", str(tmp_path / "other"))
    assert find_idx_files("mnist") is None and find_idx_files("fashion-mnist") != tmp_path / "other"
    _labelled_idx_set(tmp_path / "m", *MNIST)
    assert recognise_idx(tmp_path / "m") == "mnist"


_IDX_NAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz"]


def test_loaded_data_says_where_it_came_from_and_its_checksum(tmp_path, monkeypatch):
    _fake_idx_set(tmp_path / "env" / "mnist", n_train=40)
    monkeypatch.setenv("PYROCOMPRESS_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    a = load_dataset("mnist", download=False)
    assert a.source == str((tmp_path / "env" / "mnist").resolve()) and len(a.checksum) == 64
    _fake_idx_set(tmp_path / "env" / "mnist", n_train=41)
    assert load_dataset("mnist", download=False).checksum != a.checksum
    digits = load_dataset("digits")
    assert digits.source.startswith("scikit-learn") and digits.checksum == load_dataset("digits", seed=4).checksum


def test_a_gzip_bomb_is_refused_without_decompressing_it(tmp_path):
    import resource

    # a valid IDX header for 10 bytes, then 4 GiB of zeros compressed to about 4 MB
    path = tmp_path / "bomb-idx1-ubyte.gz"
    header = struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 10)
    zeros = bytes(1 << 24)
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(header)
        for _ in range(256):
            fh.write(zeros)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match="holds more than 10 data bytes"):
        read_idx(path)
    # a header announcing an absurd array
    huge = tmp_path / "huge-idx3-ubyte.gz"
    with gzip.open(huge, "wb") as fh:
        fh.write(struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", 4_000_000_000, 4000, 4000))
    with pytest.raises(DataError, match="claims .* bytes of data"):
        read_idx(huge)
    # the known data sets' files must have their known shape
    small = tmp_path / "train-labels-idx1-ubyte.gz"
    _write_idx(small, np.zeros(7))
    with pytest.raises(DataError, match=r"shape \(7,\), expected \(60000,\)"):
        read_idx(small, expected=(60000,))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB: far below 4 GiB
