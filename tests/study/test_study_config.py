"""Study configuration: the embedded default, validation errors that name the key and line."""
import pytest

from pyrocompress.study.config import StudyConfigError, load_config, parse_config

BASE = """
[study]
name = "t"
seeds = [0, 1]

[[datasets]]
name = "digits"

[[models]]
name = "mlp"

[grid]
compression = [2, 4]

[[methods]]
name = "mag"
family = "magnitude"
"""


def test_default_config_is_valid_and_complete():
    cfg = load_config()
    assert [d.name for d in cfg.datasets] == ["digits"]
    assert [m.name for m in cfg.models] == ["mlp", "kernelnet"]
    assert len(cfg.seeds) >= 3
    families = {m.family for m in cfg.methods}
    assert {"bayes", "self_compress", "magnitude", "imp", "random"} <= families
    assert [p.compression for p in cfg.grid] == sorted(p.compression for p in cfg.grid)
    # dense references come first and start from both trained networks
    kinds = {m.name: m.kind for m in cfg.all_methods()}
    assert kinds["dense-bayesian"] == "bayesian" and kinds["dense-deterministic"] == "deterministic"
    assert kinds["bnn-snr"] == "bayesian" and kinds["magnitude"] == "deterministic"


def test_hash_depends_on_content_only():
    a, b = parse_config(BASE), parse_config(BASE.replace('name = "t"', 'name = "t"  # same'))
    assert a.config_hash() == b.config_hash()
    assert parse_config(BASE.replace("[2, 4]", "[2, 8]")).config_hash() != a.config_hash()


def test_sparsity_grid_converts_to_compression():
    cfg = parse_config(BASE.replace("compression = [2, 4]", "sparsity = [0.5, 0.75]"))
    assert [p.compression for p in cfg.grid] == [2.0, 4.0]
    assert cfg.grid[1].sparsity == pytest.approx(0.75)


def test_invalid_toml_names_the_line():
    with pytest.raises(StudyConfigError, match="invalid TOML.*line 6"):
        parse_config(BASE.replace('seeds = [0, 1]\n', 'seeds = [0, 1]\n\nnope nope\n'), source="x.toml")


@pytest.mark.parametrize("old,new,pattern", [
    ('family = "magnitude"', 'family = "magnitud"', r"methods\[0\]\.family \(line 17\).*valid families.*magnitude"),
    ('name = "mlp"', 'name = "resnet"', r"models\[0\]\.name \(line 10\).*valid models.*kernelnet"),
    ('name = "digits"', 'name = "cifar"', r"datasets\[0\]\.name \(line 7\).*valid data sets.*fashion-mnist"),
    ("compression = [2, 4]", "compression = []", r"grid\.compression \(line 13\).*grid is empty"),
    ("compression = [2, 4]", "compression = [0.5]", r"grid\.compression.*> 1"),
    ('seeds = [0, 1]', 'seeds = []', r"study\.seeds \(line 4\).*non-empty"),
    ('family = "magnitude"', 'family = "bayes"\nscore = "snrr"', r"methods\[0\]\.score \(line 18\).*valid.*snr"),
    ('family = "magnitude"', 'family = "imp"\nrounds = 0', r"methods\[0\]\.rounds.*>= 1"),
    ('family = "magnitude"', 'family = "magnitude"\nbogus = 1', r"methods\[0\]\.bogus.*valid options"),
])
def test_bad_values_are_named_with_their_line(old, new, pattern):
    assert old in BASE
    with pytest.raises(StudyConfigError, match=pattern):
        parse_config(BASE.replace(old, new, 1))


def test_unknown_top_level_key_and_duplicate_method():
    with pytest.raises(StudyConfigError, match="unknown key 'extra'"):
        parse_config(BASE + "\n[extra]\na = 1\n")
    with pytest.raises(StudyConfigError, match="unique"):
        parse_config(BASE + '\n[[methods]]\nname = "mag"\nfamily = "random"\n')
    with pytest.raises(StudyConfigError, match="reserved"):
        parse_config(BASE.replace('name = "mag"', 'name = "dense-bayesian"'))


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(StudyConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_shipped_experiment_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "experiments"
    files = sorted(root.glob("*.toml"))
    names = {f.stem for f in files}
    assert {"fashion_lenet300", "fashion_lenet5", "fashion_kernelnet"} <= names
    assert any(n.startswith("mnist_") for n in names)
    for f in files:
        cfg = load_config(f)
        assert cfg.name == f.stem and len(cfg.seeds) >= 3


def test_moment_propagation_estimator_names_are_checked():
    cfg = parse_config(BASE + '\n[bayesian]\nestimator = "moment_propagation:relu=taylor,pool=argmax"\n')
    assert cfg is not None
    with pytest.raises(StudyConfigError, match=r"bayesian\.estimator.*relu.*exact.*taylor"):
        parse_config(BASE + '\n[bayesian]\nestimator = "moment_propagation:relu=tanh"\n')
    with pytest.raises(StudyConfigError, match=r"bayesian\.estimator.*unknown estimator 'flip'"):
        parse_config(BASE + '\n[bayesian]\nestimator = "flip"\n')


def test_model_options_are_checked_against_the_zoo_model():
    with pytest.raises(StudyConfigError, match=r"models\[0\]\.options \(line 11\).*no option 'hiden'.*hidden"):
        parse_config(BASE.replace('name = "mlp"\n', 'name = "mlp"\noptions = { hiden = [10] }\n', 1))


RECIPE = BASE + '''
[[methods]]
name = "sparse-vd"
family = "bayes"
score = "log_alpha"
auto_threshold = true
[methods.train]
prior = "log_uniform"
kl_anneal_epochs = 2
init_from = "deterministic"
'''


def test_a_training_recipe_gets_its_own_network_and_dense_reference():
    cfg = parse_config(RECIPE)
    svd = cfg.methods[1]
    assert svd.recipe.overrides == {"prior": "log_uniform", "kl_anneal_epochs": 2, "init_from": "deterministic"}
    labels = [r.label for r in cfg.recipes()]
    # the recipe's network, and a deterministic twin at its total epochs (the strongest dense reference)
    assert labels[:2] == ["bayesian", "deterministic"] and labels[2].startswith("bayesian-") and len(labels) == 4
    assert labels[3].startswith("deterministic-")
    names = [m.name for m in cfg.all_methods()]
    assert names[:3] == ["dense-bayesian", "dense-deterministic", f"dense-{labels[2]}"]
    values = cfg.train_config(cfg.datasets[0], cfg.models[0], 0, svd.recipe)
    assert values["prior"] == "log_uniform" and values["kl_anneal_epochs"] == 2 and not values["deterministic"]
    assert cfg.points_of(svd) == [None]
    other = parse_config(RECIPE.replace("kl_anneal_epochs = 2", "kl_anneal_epochs = 3"))
    assert cfg.config_hash() != other.config_hash()


@pytest.mark.parametrize("old,new,pattern", [
    ("kl_anneal_epochs = 2", "kl_anneal_epoch = 2", r"methods\[1\]\.train \(line \d+\).*unknown training option "
                                                     r"'kl_anneal_epoch'.*valid options"),
    ("kl_anneal_epochs = 2", "seed = 3", r"unknown training option 'seed'"),
    ('init_from = "deterministic"', 'init_from = "runs/x"', r"methods\[1\]\.train.*init_from"),
    ('prior = "log_uniform"', 'prior = "log_normal"', r"methods\[1\]\.train\.prior.*valid priors"),
    ('family = "bayes"\nscore = "log_alpha"\nauto_threshold = true', 'family = "imp"',
     r"methods\[1\]\.train\.kl_anneal_epochs.*is a Bayesian training option"),
])
def test_bad_training_recipes_are_named(old, new, pattern):
    assert old in RECIPE
    with pytest.raises(StudyConfigError, match=pattern):
        parse_config(RECIPE.replace(old, new, 1))
