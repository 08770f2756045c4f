"""Data sets by name, validated, split and batched for fast in-memory training.

* ``digits``: scikit-learn's 8x8 digits (shipped with scikit-learn; the embedded default);
* ``fashion-mnist`` and ``mnist``: the standard IDX ``.gz`` files, looked up in an explicit
  ``data_dir``, ``$PYROCOMPRESS_DATA/<name>``, ``$PYROCOMPRESS_DATA``, ``~/.cache/pyrocompress/<name>``,
  ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist``), else downloaded
  from the canonical mirrors with MD5 verification. The two share their file names, so the
  files are recognised by content on every load (their first labels): a folder holding the
  other data set is never taken for this one, and the shared ``$PYROCOMPRESS_DATA`` folder
  must hold recognisably this one. IDX files are read in bounded chunks after their header
  says how large they are (a gzip bomb is refused, not decompressed);
* arrays or tensors the user passes (:func:`from_arrays`).

Every loaded bundle records where its data came from (``source``) and a SHA-256 of its
content (``checksum``); run directories store both and check them when the data is loaded again.

Data that fits in memory stays as tensors on the training device and is batched by
index (:class:`Batches`), which keeps batching far below the cost of a training step.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from .errors import DataError, UserError
from ._files import atomic_write
from ._memory import check_memory

__all__ = [
    "DATASETS",
    "DataBundle",
    "Split",
    "Batches",
    "load_dataset",
    "from_arrays",
    "read_idx",
    "find_idx_files",
    "download_idx_files",
    "DataError",
    "validate_xy",
    "dataset_name",
    "OOD_SETS",
    "resolve_ood",
    "ood_inputs",
    "DATA_SHAPES",
    "check_same_data",
]


# file name -> md5, and mirrors, of the IDX data sets
_IDX_FILES = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
}
_MIRRORS = {
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
}
_CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "mnist": [str(i) for i in range(10)],
    "digits": [str(i) for i in range(10)],
}
DATASETS = ("digits", "fashion-mnist", "mnist")
#: (input shape, classes) of the named data sets: what models are sized for before any data is read
DATA_SHAPES = {"digits": ((1, 8, 8), 10), "fashion-mnist": ((1, 28, 28), 10), "mnist": ((1, 28, 28), 10)}
#: what recognises an IDX data set by content: the number of examples and the first labels of each split
_FINGERPRINTS = {
    "mnist": {"train": (60000, (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)), "t10k": (10000, (7, 2, 1, 0, 4, 1, 4, 9, 5, 9))},
    "fashion-mnist": {"train": (60000, (9, 0, 0, 3, 0, 2, 7, 2, 5, 5)),
                      "t10k": (10000, (9, 2, 1, 1, 6, 1, 4, 6, 5, 7))},
}
#: the IDX dims each file of the known data sets has
_IDX_DIMS = {"train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
             "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,)}


@dataclass
class Split:
    """Inputs (N, C, H, W) float32 and integer labels (N,) of one split."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class DataBundle:
    """Train / validation / test splits of one data set, with what models need to know."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    normalization: tuple[float, float] = (0.0, 1.0)
    #: where the data came from (a folder, ``scikit-learn``, ``arrays``)
    source: str = ""
    #: SHA-256 of the data set's content (its files as decoded), what a run records to find it again
    checksum: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def to(self, device) -> "DataBundle":
        return DataBundle(self.name, self.train.to(device), self.val.to(device), self.test.to(device),
                          self.num_classes, self.class_names, self.normalization, self.source, self.checksum)

    def describe(self) -> dict:
        return {"dataset": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "train": len(self.train), "val": len(self.val), "test": len(self.test),
                "normalization": list(self.normalization)}


class Batches:
    """Index batches over tensors already on the training device (no per-sample DataLoader).

    The order is drawn from a dedicated CPU generator seeded by ``seed`` and the epoch, so
    two trainings with the same seed see the same data order on any device.
    """

    def __init__(self, split: Split, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        if int(batch_size) <= 0:
            raise UserError(f"batch_size must be a positive integer, got {batch_size}")
        if len(split) == 0:
            raise DataError("cannot batch an empty data set")
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        x, y = self.split.x, self.split.y
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen).to(x.device)
        else:
            order = None
        self.epoch += 1
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            if order is None:
                yield x[start:start + self.batch_size], y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                yield x.index_select(0, idx), y.index_select(0, idx)


# ----------------------------------------------------------------- validation
def validate_xy(x, y, num_classes: Optional[int] = None, what: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """Check inputs and labels; return them as float32 (N, C, H, W) and int64 (N,) tensors."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if x.shape[0] == 0 or y.numel() == 0:
        raise DataError(f"{what}: the data set is empty")
    if y.dim() != 1:
        raise DataError(f"{what}: labels must be a 1-d array of class indices, got shape {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        if y.dtype.is_floating_point and torch.all(y == y.round()) and torch.isfinite(y).all():
            raise DataError(f"{what}: labels must be integers, got dtype {y.dtype}; convert them with .long()")
        raise DataError(f"{what}: labels must be integer class indices, got dtype {y.dtype}")
    y = y.long()
    if (y < 0).any() or (num_classes is not None and (y >= num_classes).any()):
        raise DataError(f"{what}: labels out of range [0, {num_classes}): min {int(y.min())}, max {int(y.max())}")
    if not x.dtype.is_floating_point:
        x = x.float()
    x = x.float()
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"{what}: inputs contain {bad} NaN or infinite values; clean or impute them first")
    if x.dim() == 2:
        x = x[:, None, None, :]
    elif x.dim() == 3:
        x = x[:, None, :, :]
    elif x.dim() != 4:
        raise DataError(f"{what}: inputs must have shape (N, features), (N, H, W) or (N, C, H, W); got {tuple(x.shape)}")
    return x.contiguous(), y


def _split_train_val(x, y, val_fraction: float, seed: int):
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    n = x.shape[0]
    n_val = int(round(n * val_fraction))
    if n - n_val < 1:
        raise DataError("the training split would be empty; lower val_fraction")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return Split(x[train_idx], y[train_idx]), Split(x[val_idx], y[val_idx])


def from_arrays(x_train, y_train, x_test=None, y_test=None, *, name: str = "arrays",
                num_classes: Optional[int] = None, val_fraction: float = 0.1, seed: int = 0,
                normalize: bool = True, class_names: Optional[Sequence[str]] = None) -> DataBundle:
    """Build a :class:`DataBundle` from arrays or tensors the user passes.

    Inputs may be (N, features), (N, H, W) or (N, C, H, W); labels integer class indices.
    Without a test set, ``val_fraction`` of the training data is held out for validation and
    the test split is the validation split (say so in your reports).
    Normalisation uses the training split's mean and standard deviation.
    """
    x_train, y_train = validate_xy(x_train, y_train, num_classes, "training data")
    if num_classes is None:
        num_classes = int(y_train.max()) + 1
        if x_test is not None and y_test is not None:
            num_classes = max(num_classes, int(torch.as_tensor(np.asarray(y_test)).max()) + 1)
    if num_classes < 2:
        raise DataError("need at least 2 classes")
    train, val = _split_train_val(x_train, y_train, val_fraction, seed)
    if x_test is not None or y_test is not None:
        if x_test is None or y_test is None:
            raise DataError("give both x_test and y_test, or neither")
        x_test, y_test = validate_xy(x_test, y_test, num_classes, "test data")
        if x_test.shape[1:] != x_train.shape[1:]:
            raise DataError(f"test inputs have shape {tuple(x_test.shape[1:])}, training inputs {tuple(x_train.shape[1:])}")
        test = Split(x_test, y_test)
    else:
        test = val
    mean, std = 0.0, 1.0
    if normalize:
        mean = float(train.x.mean())
        std = float(train.x.std()) or 1.0
        train = Split((train.x - mean) / std, train.y)
        val = Split((val.x - mean) / std, val.y)
        test = Split((test.x - mean) / std, test.y) if test is not val else val
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    return DataBundle(name, train, val, test, int(num_classes), names, (mean, std))


# ------------------------------------------------------------------------ IDX
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


#: an IDX file larger than this (decoded) is refused before it is read
MAX_IDX_BYTES = 16 << 30


def _read_exact(fh, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = fh.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_idx(path: str | os.PathLike, expected: Optional[tuple[int, ...]] = None, digest=None) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), validating magic number, dims and size.

    The header is read first; the data is then read in bounded chunks, exactly as many bytes as
    the header says (``expected``: the dims it must have), and a file holding more is refused: a
    gzip bomb or a huge file posing as IDX never fills the memory. ``digest`` (a hashlib object)
    is updated with the decoded bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            head = _read_exact(fh, 4)
            if len(head) < 4:
                raise DataError(f"IDX file {path} is truncated: {len(head)} bytes")
            zero1, zero2, type_code, ndim = struct.unpack(">BBBB", head)
            if zero1 != 0 or zero2 != 0 or type_code not in _IDX_DTYPES or not 1 <= ndim <= 4:
                raise DataError(f"IDX file {path} has a bad magic number {head.hex()}: not an IDX file")
            raw_dims = _read_exact(fh, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"IDX file {path} is truncated inside its header")
            dims = struct.unpack(">" + "I" * ndim, raw_dims)
            if expected is not None and tuple(dims) != tuple(expected):
                raise DataError(f"IDX file {path} holds an array of shape {tuple(dims)}, expected {tuple(expected)}: "
                                "it is not the file of this data set")
            dtype = np.dtype(_IDX_DTYPES[type_code])
            size = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            if size > MAX_IDX_BYTES:
                raise DataError(f"IDX file {path} claims {size} bytes of data (shape {tuple(dims)}), more than "
                                f"{MAX_IDX_BYTES}: it is corrupt or not a data set pyrocompress reads")
            check_memory(size, f"IDX file {path} (shape {tuple(dims)})")
            buf = bytearray(size)
            view = memoryview(buf)
            got = 0
            while got < size:
                n = fh.readinto(view[got:got + (1 << 22)])
                if not n:
                    break
                got += n
            extra = fh.read(1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"IDX file {path} is corrupt or truncated ({exc}); delete it and fetch it again") from exc
    if got != size or extra:
        held = f"{got}" if got != size else f"more than {size}"
        raise DataError(f"IDX file {path} holds {held} data bytes, its header {dims} says {size}: "
                        "the file is truncated or corrupt; delete it and fetch it again")
    if digest is not None:
        digest.update(head + raw_dims)
        digest.update(view)
    return np.frombuffer(buf, dtype=dtype).reshape(dims)


def _search_dirs(name: str, data_dir: Optional[str | os.PathLike]) -> list[tuple[Path, str]]:
    """The folders to look in, in order, with how far each is trusted: ``explicit`` (a data_dir the
    user gave), ``named`` (a folder of this data set by name) or ``shared`` (``$PYROCOMPRESS_DATA``
    itself, which may hold any data set: its files must be recognisably this one)."""
    dirs: list[tuple[Path, str]] = []
    if data_dir is not None:
        dirs.append((Path(data_dir), "explicit"))
    env = os.environ.get("PYROCOMPRESS_DATA")
    if env:
        dirs += [(Path(env) / name, "named"), (Path(env), "shared")]
    dirs.append((Path.home() / ".cache" / "pyrocompress" / name, "named"))
    dirs.append((Path("/usr/share/datasets") / name, "named"))
    return dirs


def _first_labels(folder: Path, stem: str, n: int = 10) -> Optional[tuple[int, tuple[int, ...]]]:
    """(number of labels, the first ``n``) of an IDX label file, reading only its first bytes."""
    path = folder / f"{stem}.gz"
    path = path if path.is_file() else folder / stem
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
            head = _read_exact(fh, 8 + n)
    except (OSError, EOFError, zlib.error):
        return None
    if len(head) < 8 or head[:4] != b"\x00\x00\x08\x01":
        return None
    return struct.unpack(">I", head[4:8])[0], tuple(head[8:])


def recognise_idx(folder: str | os.PathLike) -> Optional[str]:
    """The known data set (``mnist``, ``fashion-mnist``) whose files ``folder`` holds, recognised by
    content (the number and first labels of each split), or None."""
    folder = Path(folder)
    seen = {split: _first_labels(folder, f"{split}-labels-idx1-ubyte") for split in ("train", "t10k")}
    for name, marks in _FINGERPRINTS.items():
        if all(seen[split] == marks[split] for split in marks):
            return name
    return None


def _has_files(folder: Path, name: str) -> bool:
    return all((folder / f).is_file() or (folder / f[:-3]).is_file() for f in _IDX_FILES[name])


def _find(name: str, data_dir) -> tuple[Optional[Path], list[str]]:
    """The folder holding ``name``'s files (recognised, see :func:`_search_dirs`) and why others were passed over."""
    passed: list[str] = []
    for folder, trust in _search_dirs(name, data_dir):
        if not _has_files(folder, name):
            continue
        found = recognise_idx(folder)
        if found == name or (found is None and trust != "shared"):
            return folder, passed
        if found is not None:
            passed.append(f"{folder} holds {found}, not {name}")
        else:
            passed.append(f"{folder} ($PYROCOMPRESS_DATA) holds IDX files that are not recognisably {name} (move "
                          f"them to $PYROCOMPRESS_DATA/{name} if they are)")
    return None, passed


def find_idx_files(name: str, data_dir: Optional[str | os.PathLike] = None) -> Optional[Path]:
    """The first folder (in look-up order) that holds all four IDX files of ``name``, or None.

    MNIST and Fashion-MNIST share their file names: a folder whose files are recognisably the
    other data set is passed over, and so is ``$PYROCOMPRESS_DATA`` itself unless its files are
    recognisably ``name`` (a per-name folder, or a ``data_dir`` given, may hold a variant).
    """
    return _find(name, data_dir)[0]


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_idx_files(name: str, target: str | os.PathLike, mirrors: Optional[Sequence[str]] = None,
                       md5: Optional[dict[str, str]] = None, timeout: float = 30.0) -> Path:
    """Download the IDX files of ``name`` into ``target``, verifying each MD5; atomic per file."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    md5 = md5 or _IDX_FILES[name]
    mirrors = list(mirrors or _MIRRORS[name])
    for filename, checksum in md5.items():
        dest = target / filename
        if dest.is_file() and _md5(dest) == checksum:
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + filename

            def fetch(tmp: str, url: str = url, checksum: str = checksum) -> None:
                with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                got = _md5(Path(tmp))
                if got != checksum:
                    raise DataError(f"checksum mismatch for {url}: got {got}, expected {checksum}")

            try:
                atomic_write(dest, fetch, suffix=".part")
                break
            except (urllib.error.URLError, OSError, DataError, ValueError) as exc:
                errors.append(f"{url}: {exc}")
        else:
            raise DataError(f"could not download {filename} for {name}: " + "; ".join(errors))
    return target


def _load_idx_dataset(name: str, data_dir, download: bool):
    folder, passed = _find(name, data_dir)
    skipped = f" (passed over: {'; '.join(passed)})" if passed else ""
    if folder is None and download:
        target = Path(data_dir) if data_dir is not None else Path.home() / ".cache" / "pyrocompress" / name
        if data_dir is not None and passed and _has_files(target, name):
            raise DataError(f"data set {name!r}: {'; '.join(passed)}; give the folder of {name}")
        try:
            folder = download_idx_files(name, target)
        except DataError as exc:
            looked = ", ".join(str(d) for d, _ in _search_dirs(name, data_dir))
            hint = " (on Debian: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
            raise DataError(
                f"data set {name!r} not found (looked in: {looked}){skipped} and the download failed: {exc}. "
                f"Put the four IDX .gz files in one of those folders or set PYROCOMPRESS_DATA{hint}.") from None
    if folder is None:
        looked = ", ".join(str(d) for d, _ in _search_dirs(name, data_dir))
        raise DataError(f"data set {name!r} not found (looked in: {looked}){skipped}; downloads are disabled")
    known = recognise_idx(folder) == name
    digest = hashlib.sha256()

    def read(stem: str) -> np.ndarray:
        path = folder / f"{stem}.gz"
        return read_idx(path if path.is_file() else folder / stem, _IDX_DIMS[stem] if known else None, digest)

    xtr, ytr = read("train-images-idx3-ubyte"), read("train-labels-idx1-ubyte")
    xte, yte = read("t10k-images-idx3-ubyte"), read("t10k-labels-idx1-ubyte")
    for images, labels, which in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{name} {which} files in {folder} do not match: images {images.shape}, labels {labels.shape}")
    return xtr, ytr, xte, yte, str(folder.resolve()), digest.hexdigest()


def check_same_data(data: DataBundle, checksum: Optional[str], what: str, source: Optional[str] = None) -> None:
    """Refuse (DataError) ``data`` when its content checksum is not ``checksum`` (what ``what``
    recorded; nothing to check when it recorded none)."""
    if checksum and data.checksum and checksum != data.checksum:
        was = f" from {source}" if source else ""
        raise DataError(f"{what} was made with other {data.name} data{was} (sha256 {checksum[:12]}...) than the data "
                        f"found now in {data.source} (sha256 {data.checksum[:12]}...); point --data-dir or "
                        "PYROCOMPRESS_DATA at the data it was trained on")


def dataset_name(name: str) -> str:
    """The canonical name of a data set (``fashion``, ``Fashion_MNIST`` -> ``fashion-mnist``)."""
    key = str(name).lower().replace("_", "-")
    key = {"fashion": "fashion-mnist", "fashionmnist": "fashion-mnist"}.get(key, key)
    if key not in DATASETS:
        raise UserError(f"unknown data set {name!r}; valid data sets: {list(DATASETS)} (or use from_arrays)")
    return key


def load_dataset(name: str, data_dir: Optional[str | os.PathLike] = None, *, val_fraction: float = 0.1,
                 seed: int = 0, normalize: bool = True, download: bool = True,
                 limit: Optional[int] = None) -> DataBundle:
    """Load a data set by name (``digits``, ``fashion-mnist``, ``mnist``), split and normalised.

    The validation split is drawn from the training set with ``seed``; the test set is kept
    apart. ``limit`` keeps only the first ``limit`` training and test examples (smoke tests).
    """
    key = dataset_name(name)
    if limit is not None and int(limit) <= 0:
        raise UserError(f"limit must be positive, got {limit}")
    if key == "digits":
        # scikit-learn takes about a second to import: imported only when the digits are loaded
        import sklearn
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = digits.images.astype(np.float32) / 16.0
        y = digits.target.astype(np.int64)
        source = f"scikit-learn {sklearn.__version__}"
        checksum = hashlib.sha256(np.ascontiguousarray(digits.images).tobytes()
                                  + np.ascontiguousarray(digits.target).tobytes()).hexdigest()
        order = np.random.default_rng(12345).permutation(len(y))  # fixed test split, independent of seed
        n_test = 360
        test_idx, train_idx = order[:n_test], order[n_test:]
        xtr, ytr, xte, yte = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    else:
        xtr, ytr, xte, yte, source, checksum = _load_idx_dataset(key, data_dir, download)
        xtr, xte = xtr.astype(np.float32) / 255.0, xte.astype(np.float32) / 255.0
        ytr, yte = ytr.astype(np.int64), yte.astype(np.int64)
    if limit is not None:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit], yte[:limit]
    bundle = from_arrays(xtr, ytr, xte, yte, name=key, num_classes=10, val_fraction=val_fraction, seed=seed,
                         normalize=normalize, class_names=_CLASS_NAMES[key])
    bundle.source, bundle.checksum = source, checksum
    return bundle


# ----------------------------------------------------------------- out-of-distribution inputs
#: what a data set's out-of-distribution inputs can be: a transformation of its test images
#: (``rot90``, ``noise``), another data set's test images, none, or ``auto``
OOD_SETS = ("rot90", "noise", "mnist", "fashion-mnist", "none", "auto")


def resolve_ood(name: str, ood: str = "auto", data_dir: Optional[str | os.PathLike] = None) -> str:
    """The OOD set a data set is scored against; ``auto``: the other MNIST-like set when its
    files are present, else the test images rotated by 90 degrees."""
    if ood != "auto":
        return ood
    other = {"fashion-mnist": "mnist", "mnist": "fashion-mnist"}.get(name)
    if other is not None and find_idx_files(other, data_dir) is not None:
        return other
    return "rot90"


def ood_inputs(ood: str, bundle: DataBundle, download: bool = True) -> Optional[torch.Tensor]:
    """Out-of-distribution inputs normalised like ``bundle``: ``rot90`` (its test images rotated
    90 degrees), ``noise`` (standard normal images, seeded), another IDX data set's test images
    (as many as ``bundle`` has), or None for ``none``."""
    x = bundle.test.x
    if ood == "none":
        return None
    if ood == "rot90":
        return torch.rot90(x, 1, dims=(2, 3)).contiguous()
    if ood == "noise":
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    other = load_dataset(ood, None, normalize=False, download=download, limit=len(bundle.test))
    if other.input_shape != bundle.input_shape:
        raise DataError(f"OOD set {ood!r} has inputs {other.input_shape}, {bundle.name!r} has "
                        f"{bundle.input_shape}; choose ood = 'rot90' or 'noise'")
    mean, std = bundle.normalization
    return (other.test.x - mean) / std
