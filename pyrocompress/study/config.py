"""Study configuration: a TOML file (or the embedded default) parsed into a validated :class:`StudyConfig`.

A study crosses data sets x models x seeds x methods x operating points. Every
(data set, model, seed) is trained once as a Bayesian network (SVI) and once as its
deterministic twin (same initial weights, optimiser, epochs and data order); each method
then prunes one of the two at each operating point of the grid. Layout::

    [study]                      # name, seeds, device, eval settings
    name = "my-study"
    seeds = [0, 1, 2]

    [[datasets]]                 # one table per data set
    name = "digits"              # digits | fashion-mnist | mnist
    ood = "rot90"                # OOD set for the AUROC: rot90 | noise | mnist | fashion-mnist | none

    [[models]]                   # one table per zoo model
    name = "mlp"
    options = { hidden = [100, 50] }

    [train]                      # shared by the Bayesian network and its deterministic twin
    epochs = 20

    [bayesian]                   # Bayesian-only training options
    prior = "normal:0.1"

    [grid]                       # operating points: compression ratios (or sparsity = [...])
    compression = [2, 4, 8, 16]

    [[methods]]                  # one table per method; family picks the algorithm
    name = "bnn-snr"
    family = "bayes"
    score = "snr"

    [[methods]]                  # a method may train its own network: [methods.train] overrides
    name = "sparse-vd"           # any training option (a recipe; trained once per data set, model, seed)
    family = "bayes"
    score = "log_alpha"
    auto_threshold = true
    [methods.train]
    prior = "log_uniform"
    init_from = "deterministic"  # the guide's means start from the trained deterministic twin

Errors name the key and, where it can be found, the line of the file; unknown keys list the
valid ones (``[[models]] options`` are checked against the zoo model's arguments).
"""
from __future__ import annotations

import copy
import math
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli backport (a dependency there)
    import tomli as tomllib

from .._files import read_bounded
from .._memory import check_memory
from ..data import DATA_SHAPES, DATASETS, OOD_SETS, dataset_name
from ..errors import UserError
from ..infer.estimators import ESTIMATORS
from ..infer.guides import GUIDES
from ..infer.moments import is_moment_estimator, moment_options
# [study] eval_estimator: auto (as the network was trained: its own propagated moments after
# moment propagation, else weight sampling), weight_sampling (one weight draw per sample shared by
# the test set: one plain pass per sample), local_reparam (independent draws per example, 2 passes
# per layer), flipout
from ..infer.predictive import EVAL_ESTIMATORS
from ..names import Kind
from ..nn.priors import PRIORS, make_prior
from ..nn.zoo import MODELS, model_name, model_parameter_count
from ..prune.methods import OptionError, UnknownMethodError, method_class, method_names
from ..training import training_memory
from .specs import TRAIN_BAYESIAN, TRAIN_SHARED, DatasetSpec, MethodSpec, ModelSpec, OperatingPoint, StudyConfig

__all__ = [
    "StudyConfigError",
    "StudyConfig",
    "DatasetSpec",
    "ModelSpec",
    "MethodSpec",
    "OperatingPoint",
    "load_config",
    "parse_config",
    "default_config_text",
    "copy_config",
    "OOD_SETS",
    "EVAL_ESTIMATORS",
    "DENSE_PREFIX",
    "is_device",
]

#: names of the reference trials every study has (``dense-bayesian``, ``dense-deterministic``, ...)
DENSE_PREFIX = "dense-"
#: a study configuration larger than this is not one (and is not read)
MAX_CONFIG_BYTES = 4 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class StudyConfigError(UserError):
    """The study configuration is invalid; the message names the key (and line) to fix."""


# ------------------------------------------------------------------ locating
def _line_of(text: Optional[str], path: tuple) -> Optional[int]:
    """Best-effort line number (1-based) of ``path`` in TOML text.

    ``path`` is (table,), (table, key), (array_table, index) or (array_table, index, key).
    """
    if not text or not path:
        return None
    header = path[0]
    index = path[1] if len(path) > 1 and isinstance(path[1], int) else None
    rest = path[2:] if index is not None else path[1:]
    key = rest[0] if rest and isinstance(rest[0], str) else None
    counts: dict[str, int] = {}
    inside = False
    header_line = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^\[\[\s*([^\]]+?)\s*\]\]$", line) or re.match(r"^\[\s*([^\]]+?)\s*\]$", line)
        if m:
            name = m.group(1)
            counts[name] = counts.get(name, -1) + 1
            inside = name == header and (index is None or counts[name] == index)
            if inside and header_line is None:
                header_line = lineno
                if key is None:
                    return lineno
            elif key is not None and inside is False and name == f"{header}.{key}" and \
                    (index is None or counts.get(header, -1) == index):
                return lineno
            continue
        if inside and key is not None and re.match(rf'^"?{re.escape(key)}"?\s*=', line):
            return lineno
    return header_line


def _where(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Checker:
    """Collects the context (file name, text) for error messages."""

    def __init__(self, text: Optional[str], source: str) -> None:
        self.text = text
        self.source = source

    def error(self, path: tuple, message: str) -> StudyConfigError:
        line = _line_of(self.text, path)
        at = f" (line {line})" if line else ""
        return StudyConfigError(f"{self.source}: {_where(path)}{at}: {message}")

    def table(self, raw: dict, path: tuple, allowed: tuple[str, ...]) -> dict:
        if not isinstance(raw, dict):
            raise self.error(path, f"must be a table, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise self.error(path + (unknown[0],), f"unknown key {unknown[0]!r}; valid keys: {sorted(allowed)}")
        return raw

    def int_(self, value, path: tuple, minimum: int = 0) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.error(path, f"must be an integer >= {minimum}, got {value!r}")
        return int(value)

    def number(self, value, path: tuple, positive: bool = True) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or \
                (positive and value <= 0):
            raise self.error(path, f"must be a {'positive ' if positive else ''}number, got {value!r}")
        return float(value)

    def name(self, value, path: tuple) -> str:
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise self.error(path, f"must be a name of letters, digits and _ . + - (no spaces, no '/'), "
                                   f"got {value!r}")
        return value


# ------------------------------------------------------------------ parsing
def is_device(device: Any) -> bool:
    """Whether ``device`` names a study device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    return isinstance(device, str) and re.match(r"^(auto|cpu|cuda(:\d+)?|mps)$", device) is not None


def default_config_text() -> str:
    """The TOML text of the embedded default study (``pyrocompress study`` with no file)."""
    return resources.files("pyrocompress.study").joinpath("default.toml").read_text()


def load_config(path: Optional[str | Path] = None) -> StudyConfig:
    """Read and validate a study TOML file; ``None`` gives the embedded default."""
    if path is None:
        return parse_config(default_config_text(), source="<embedded default>")
    path = Path(path)
    if path.is_dir():
        raise StudyConfigError(f"study configuration {path} is a folder; give the TOML file in it "
                               f"(e.g. {path / 'study.toml'}; see experiments/*.toml)")
    if not path.is_file():
        raise StudyConfigError(f"study configuration {path} does not exist; give a TOML file "
                               f"(see experiments/*.toml) or run `pyrocompress study` for the default")
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES, "study configuration", StudyConfigError).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StudyConfigError(f"{path}: not a UTF-8 text file ({exc})") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<string>") -> StudyConfig:
    """Parse and validate study TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyConfigError(f"{source}: invalid TOML: {exc}") from None
    return _validate(raw, _Checker(text, source))


def _validate(raw: dict, c: _Checker) -> StudyConfig:
    c.table(raw, (), ("study", "datasets", "models", "train", "bayesian", "deterministic", "grid", "methods"))
    study = c.table(raw.get("study", {}), ("study",),
                    ("name", "seeds", "device", "eval_samples", "eval_estimator", "latency_repeats",
                     "report_point"))
    name = c.name(study.get("name", "study"), ("study", "name"))
    seeds = study.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds:
        raise c.error(("study", "seeds"), f"must be a non-empty list of integers, got {seeds!r}")
    seeds = [c.int_(s, ("study", "seeds")) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise c.error(("study", "seeds"), f"seeds must be distinct, got {seeds}")
    device = study.get("device", "cpu")
    if not is_device(device):
        raise c.error(("study", "device"), f"must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    eval_samples = c.int_(study.get("eval_samples", 16), ("study", "eval_samples"), 1)
    eval_estimator = study.get("eval_estimator", "auto")
    if not isinstance(eval_estimator, str) or eval_estimator.lower().replace("-", "_") not in EVAL_ESTIMATORS:
        raise c.error(("study", "eval_estimator"), f"unknown estimator {eval_estimator!r} for the posterior "
                                                   f"predictive; valid: {list(EVAL_ESTIMATORS)}")
    eval_estimator = eval_estimator.lower().replace("-", "_")
    latency_repeats = c.int_(study.get("latency_repeats", 10), ("study", "latency_repeats"), 0)
    report_point = study.get("report_point")
    if report_point is not None:
        report_point = c.number(report_point, ("study", "report_point"))

    # data sets
    datasets_raw = raw.get("datasets")
    if not isinstance(datasets_raw, list) or not datasets_raw:
        raise c.error(("datasets",), "the study needs at least one [[datasets]] table with a name, "
                                     f"one of {list(DATASETS)}")
    datasets = []
    for i, d in enumerate(datasets_raw):
        c.table(d, ("datasets", i), ("name", "data_dir", "limit", "val_fraction", "ood", "download"))
        if "name" not in d:
            raise c.error(("datasets", i), f"needs a name, one of {list(DATASETS)}")
        try:
            dname = dataset_name(d["name"])
        except ValueError:
            raise c.error(("datasets", i, "name"),
                          f"unknown data set {d['name']!r}; valid data sets: {list(DATASETS)}") from None
        limit = d.get("limit")
        if limit is not None:
            limit = c.int_(limit, ("datasets", i, "limit"), 1)
        vf = d.get("val_fraction", 0.1)
        if not isinstance(vf, (int, float)) or not 0 <= vf < 1:
            raise c.error(("datasets", i, "val_fraction"), f"must lie in [0, 1), got {vf!r}")
        ood = str(d.get("ood", "auto")).lower()
        if ood not in OOD_SETS:
            raise c.error(("datasets", i, "ood"), f"unknown OOD set {d['ood']!r}; valid: {list(OOD_SETS)}")
        if ood == dname:
            raise c.error(("datasets", i, "ood"), "the OOD set must differ from the data set")
        data_dir = d.get("data_dir")
        if data_dir is not None and not isinstance(data_dir, str):
            raise c.error(("datasets", i, "data_dir"), "must be a path string")
        download = d.get("download", True)
        if not isinstance(download, bool):
            raise c.error(("datasets", i, "download"), "must be true or false")
        datasets.append(DatasetSpec(dname, data_dir, limit, float(vf), ood, download))
    if len({d.name for d in datasets}) != len(datasets):
        raise c.error(("datasets",), "each data set may appear once")

    # models
    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise c.error(("models",), f"the study needs at least one [[models]] table; valid models: {sorted(MODELS)}")
    models = []
    for i, m in enumerate(models_raw):
        c.table(m, ("models", i), ("name", "options", "train", "label"))
        try:
            mname = model_name(m.get("name", ""))
        except ValueError:
            raise c.error(("models", i, "name"),
                          f"unknown model {m.get('name')!r}; valid models: {sorted(MODELS)}") from None
        options = m.get("options", {})
        if not isinstance(options, dict):
            raise c.error(("models", i, "options"), "must be a table of model options")
        for d in datasets:  # the option names, their values and the size, for each data set's inputs
            shape, classes = DATA_SHAPES[d.name]
            try:
                count = model_parameter_count(mname, shape, classes, **options)
                check_memory(training_memory(count, False), f"training {mname} with {options} on {d.name} "
                             f"({count:,} parameters)", "choose smaller options")
            except UserError as exc:
                raise c.error(("models", i, "options"), str(exc)) from None
        train_over = c.table(m.get("train", {}), ("models", i, "train"), TRAIN_SHARED + TRAIN_BAYESIAN)
        _check_train_values(train_over, ("models", i, "train"), c)
        label = c.name(m.get("label", mname), ("models", i, "label"))
        models.append(ModelSpec(mname, dict(options), dict(train_over), label))
    if len({m.label for m in models}) != len(models):
        raise c.error(("models",), "two models have the same label; give each [[models]] a distinct label")

    # training
    train = dict(c.table(raw.get("train", {}), ("train",), TRAIN_SHARED))
    bayesian = dict(c.table(raw.get("bayesian", {}), ("bayesian",), TRAIN_BAYESIAN))
    deterministic = dict(c.table(raw.get("deterministic", {}), ("deterministic",), TRAIN_SHARED))
    for section, values in (("train", train), ("bayesian", bayesian), ("deterministic", deterministic)):
        _check_train_values(values, (section,), c)

    # grid
    grid_raw = c.table(raw.get("grid", {}), ("grid",), ("compression", "sparsity"))
    if "compression" in grid_raw and "sparsity" in grid_raw:
        raise c.error(("grid",), "give either compression = [...] or sparsity = [...], not both")
    if "sparsity" in grid_raw:
        values = grid_raw["sparsity"]
        if not isinstance(values, list):
            raise c.error(("grid", "sparsity"), "must be a list of sparsities in (0, 1)")
        points = []
        for v in values:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1:
                raise c.error(("grid", "sparsity"), f"sparsities must lie in (0, 1), got {v!r}")
            points.append(OperatingPoint(round(1.0 / (1.0 - float(v)), 6)))
    else:
        values = grid_raw.get("compression", [2, 4, 8, 16, 32])
        if not isinstance(values, list):
            raise c.error(("grid", "compression"), "must be a list of compression ratios > 1")
        points = []
        for v in values:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 1 or not math.isfinite(v):
                raise c.error(("grid", "compression"), f"compression ratios must be finite and > 1, got {v!r}")
            points.append(OperatingPoint(float(v)))
    if not points:
        key = "sparsity" if "sparsity" in grid_raw else "compression"
        raise c.error(("grid", key), "the operating-point grid is empty; give at least one point, "
                                     "e.g. compression = [2, 4, 8, 16, 32]")
    if len({p.compression for p in points}) != len(points):
        raise c.error(("grid",), "operating points must be distinct")
    points.sort(key=lambda p: p.compression)

    # methods
    methods_raw = raw.get("methods")
    if not isinstance(methods_raw, list) or not methods_raw:
        raise c.error(("methods",), f"the study needs at least one [[methods]] table; families: "
                                    f"{method_names(references=False)}")
    methods = [_method(m, i, c) for i, m in enumerate(methods_raw)]
    names = [m.name for m in methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise c.error(("methods",), f"method names must be unique; repeated: {dup}")

    return StudyConfig(name=name, datasets=datasets, models=models, seeds=seeds, methods=methods, grid=points,
                       train=train, bayesian=bayesian, deterministic=deterministic, device=device,
                       eval_samples=eval_samples, eval_estimator=eval_estimator, latency_repeats=latency_repeats,
                       report_point=report_point, source=c.source)


def _method(m: Any, i: int, c: _Checker) -> MethodSpec:
    """One ``[[methods]]`` table: a name, a family of the method registry, its options, its training recipe."""
    if not isinstance(m, dict):
        raise c.error(("methods", i), "must be a table")
    valid = method_names(references=False)
    if "family" not in m:
        raise c.error(("methods", i), f"needs a family, one of {valid}")
    try:
        cls = method_class(m["family"], what="method family")
    except UnknownMethodError:
        cls = None
    if cls is None or cls.name == "dense":
        raise c.error(("methods", i, "family"), f"unknown method family {m['family']!r}; valid families: {valid}")
    mname = c.name(m.get("name", cls.name), ("methods", i, "name"))
    if mname.startswith(DENSE_PREFIX):
        raise c.error(("methods", i, "name"), f"{mname!r} is reserved for the dense reference (names starting "
                                              f"with {DENSE_PREFIX!r})")
    options = {k: v for k, v in m.items() if k not in ("name", "family", "train")}
    train = m.get("train", {})
    try:
        method = cls.build(options, train)
    except OptionError as exc:
        key = exc.key if exc.key in options or exc.key == "family" else None
        where = ("methods", i) + ((key,) if key else ("train",) if exc.key in train or exc.key == "train" else ())
        raise c.error(where, str(exc)) from None
    recipe = method.recipe()
    _check_train_values(dict(recipe.overrides), ("methods", i, "train"), c, bayesian=recipe.kind is Kind.BAYESIAN)
    init_from = recipe.overrides.get("init_from")
    if init_from is not None and (init_from != "deterministic" or recipe.kind is not Kind.BAYESIAN):
        raise c.error(("methods", i, "train"), f"init_from = {init_from!r}: a study starts a Bayesian network from "
                                               "its trained deterministic twin only (init_from = \"deterministic\")")
    return MethodSpec(mname, method)


def _check_train_values(values: dict, path: tuple, c: _Checker, bayesian: bool = True) -> None:
    """Types and names of training options (a [train]-like table, a model's or a method's overrides)."""
    for key in ("epochs", "batch_size", "particles", "eval_samples"):
        if key in values:
            c.int_(values[key], path + (key,), 1)
    for key in ("kl_anneal_epochs",):
        if key in values:
            c.int_(values[key], path + (key,), 0)
    for key in ("lr", "init_scale", "kl_weight", "scale_lr", "scale_lr_factor"):
        if key in values:
            c.number(values[key], path + (key,))
    if not bayesian:
        wrong = sorted(k for k in values if k in TRAIN_BAYESIAN and k != "eval_samples")
        if wrong:
            raise c.error(path + (wrong[0],), f"{wrong[0]!r} is a Bayesian training option; this method starts "
                                              "from the deterministic twin")
    if "prior" in values and not isinstance(values["prior"], dict):
        try:
            make_prior(values["prior"])
        except (ValueError, TypeError) as exc:
            raise c.error(path + ("prior",), f"{exc} (valid priors: {sorted(PRIORS)})") from None
    if "guide" in values and values["guide"] not in GUIDES:
        raise c.error(path + ("guide",), f"unknown guide {values['guide']!r}; valid guides: {list(GUIDES)}")
    valid_est = sorted(set(ESTIMATORS) | {"moment_propagation[:key=value,...]"})
    if "estimator" in values:
        if is_moment_estimator(values["estimator"]):
            try:
                moment_options(values["estimator"])
            except ValueError as exc:
                raise c.error(path + ("estimator",), str(exc)) from None
        elif values["estimator"] not in ESTIMATORS:
            raise c.error(path + ("estimator",), f"unknown estimator {values['estimator']!r}; valid: {valid_est}")


def copy_config(cfg: StudyConfig, **changes) -> StudyConfig:
    """A copy of ``cfg`` with some fields replaced (tests and the CLI use it)."""
    new = copy.deepcopy(cfg)
    for k, v in changes.items():
        setattr(new, k, v)
    return new
