"""Pruning policy: scores -> masks, global / per layer, sparsity / threshold / automatic, safeguards."""
import pytest
import torch

from pyrocompress.infer import make_guide
from pyrocompress.nn import BayesianModel, build_model
from pyrocompress.prune.policy import STRUCTURES, PrunePolicy, auto_threshold


@pytest.fixture
def lenet():
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model("lenet5", (1, 8, 8), 10, channels=(4, 6), hidden=12), 10)
    return model, make_guide(model)


@pytest.mark.filterwarnings("ignore:the selection would have emptied")  # 90% of a 4-kernel conv2: expected
def test_global_weight_sparsity_is_met_and_output_rows_survive(lenet):
    model, guide = lenet
    masks = PrunePolicy(score="snr", structure="weight", sparsity=0.9).masks(model, guide)
    total = sum(w.numel() for w in masks.weight.values())
    kept = sum(int(w.sum()) for w in masks.weight.values())
    assert abs((1 - kept / total) - 0.9) < 0.01
    assert bool(masks.weight["fc2"].any(dim=1).all())  # every class logit still has an input
    assert not masks.bias  # unstructured pruning keeps biases


def test_per_layer_sparsity_applies_to_each_layer(lenet):
    model, guide = lenet
    masks = PrunePolicy(score="magnitude", sparsity=0.5, per_layer=True).masks(model, guide)
    for name, w in masks.weight.items():
        assert abs(1 - w.float().mean().item() - 0.5) < 0.05, name


def test_structured_kernel_and_unit_policies(lenet):
    model, guide = lenet
    kern = PrunePolicy(score="norm", structure="kernel", sparsity=0.5).masks(model, guide)
    assert set(kern.weight) == {"conv1", "conv2"}
    assert sum(int(kern.unit_keep(n).sum()) for n in kern.weight) == 5  # 10 kernels, half deleted
    unit = PrunePolicy(score="norm", structure="unit", sparsity=0.5, ignored_layers=["conv1"]).masks(model, guide)
    assert set(unit.weight) == {"conv2", "fc1"}  # the output layer fc2 is never a candidate
    with pytest.warns(UserWarning, match="emptied"):
        neuron = PrunePolicy(score="snr", structure="neuron", threshold=1e9).masks(model, guide)
    with pytest.warns(UserWarning, match="emptied"):
        neuron = PrunePolicy(score="snr", structure="neuron", threshold=1e9).masks(model, guide)
    assert int(neuron.unit_keep("fc1").sum()) == 1  # never empty


def test_threshold_deletes_below_and_keeps_the_rest():
    pol = PrunePolicy(score=None, structure="neuron", threshold=0.5)
    scores = {"a": torch.tensor([0.1, 0.6, 0.4, 0.9])}
    masks = pol.select(scores, {"a": (4, 3), "out": (2, 4)})
    assert masks.unit_keep("a").tolist() == [False, True, False, True]


def test_auto_threshold_finds_the_near_zero_mode():
    torch.manual_seed(0)
    near_zero = 1e-3 * (1 + torch.rand(10))
    rest = 0.2 + torch.rand(30)
    t = auto_threshold(torch.cat([near_zero, rest]))
    assert t is not None and float(near_zero.max()) < t < float(rest.min())
    assert auto_threshold(torch.exp(0.3 * torch.randn(40))) is None  # unimodal: nothing redundant
    assert auto_threshold(torch.tensor([-1.0, 0.5, 0.6, 0.7])) == pytest.approx(0.5)  # <= 0 is redundant
    pol = PrunePolicy(score=None, structure="unit", auto=True)
    masks = pol.select({"h": torch.cat([near_zero, rest])}, {"h": (40, 5), "out": (3, 40)})
    assert int(masks.unit_keep("h").sum()) == 30


def test_bad_inputs_are_named(lenet):
    model, guide = lenet
    for bad in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            PrunePolicy(sparsity=bad)
    with pytest.raises(ValueError, match="valid scores"):
        PrunePolicy(score="weird", sparsity=0.5)
    with pytest.raises(ValueError, match="valid structures") as info:
        PrunePolicy(structure="layer", sparsity=0.5)
    assert all(s in str(info.value) for s in STRUCTURES)
    with pytest.raises(ValueError, match="exactly one"):
        PrunePolicy(sparsity=0.5, threshold=1.0)
    other = BayesianModel.from_module(build_model("mlp", (1, 8, 8), 10, hidden=(5,)), 10)
    with pytest.raises(ValueError, match="does not belong"):
        PrunePolicy(sparsity=0.5).masks(model, make_guide(other))
    mlp = BayesianModel.from_module(build_model("mlp", (1, 8, 8), 10, hidden=(5,)), 10)
    with pytest.raises(ValueError, match="no layer to prune"):
        PrunePolicy(score="norm", structure="kernel", sparsity=0.5).masks(mlp, make_guide(mlp))
    with pytest.raises(ValueError, match="matches no layer"):
        PrunePolicy(sparsity=0.5, ignored_layers=["fc9"]).masks(mlp, make_guide(mlp))


# ----------------------------------------------------------------- a prior's own deletion rule
def _svd_model(prior="log_uniform"):
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(6,)), 3, prior=prior)
    guide = make_guide(model)
    with torch.no_grad():  # log alpha = -2 log SNR; a clear near-zero mode for the data-driven rule too
        for site in ("fc1.weight", "fc2.weight"):
            loc = guide.loc_of(site)
            snr = torch.where(torch.arange(loc.numel()).reshape(loc.shape) % 3 == 0, 0.1, 30.0)
            guide.set_posterior_(site, loc=loc.sign() * 0.5, scale=0.5 / snr)
    return model, guide


def test_auto_threshold_uses_the_priors_own_rule_when_every_layer_has_it():
    model, guide = _svd_model()
    policy = PrunePolicy(auto=True)
    rules = policy.deletion_rules(model)
    assert set(rules) == {"fc1", "fc2"} and {r.threshold for r in rules.values()} == {-3.0}
    assert policy.resolved_score(model) == "log_alpha"
    masks = policy.masks(model, guide)
    for name in ("fc1", "fc2"):  # log alpha > 3 <=> SNR < e^-1.5 = 0.22: exactly the SNR-0.1 weights go
        loc, scale = guide.loc_of(f"{name}.weight"), guide.scale_of(f"{name}.weight")
        assert torch.equal(masks.weight[name], (loc.abs() / scale) > 0.2)
    assert PrunePolicy(score="log_alpha", auto=True).deletion_rules(model) is not None


def test_auto_threshold_is_data_driven_otherwise():
    model, guide = _svd_model()
    assert PrunePolicy(score="snr", auto=True).deletion_rules(model) is None  # another score was asked for
    assert PrunePolicy(sparsity=0.5).deletion_rules(model) is None            # not the automatic threshold
    mixed, _ = _svd_model(prior={"fc1": "log_uniform", "default": "normal"})
    assert PrunePolicy(auto=True).deletion_rules(mixed) is None               # not every layer has a rule
    assert PrunePolicy(auto=True).resolved_score(mixed) == "snr"
    plain, plain_guide = _svd_model(prior="normal")
    assert PrunePolicy(auto=True).deletion_rules(plain) is None
    masks = PrunePolicy(auto=True).masks(plain, plain_guide)  # two SNR modes, 0.1 and 30: the low one goes
    assert float(masks.weight["fc1"].float().mean()) == pytest.approx(2 / 3, abs=0.05)


def test_a_group_prior_rule_deletes_units_by_their_scale_posterior():
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model("mlp", (1, 4, 4), 3, hidden=(6,)), 3,
                                      prior={"fc1": "group_log_uniform", "default": "normal"})
    guide = make_guide(model)
    scales = guide.group_scales_of("fc1")
    with torch.no_grad():  # units 0 and 3: log alpha = log(sigma^2 / mu^2) = log 100 > 3; the others -4.6
        scales.loc.fill_(1.0)
        scales.log_scale.copy_(torch.log(torch.tensor([10.0, 0.1, 0.1, 10.0, 0.1, 0.1])))
    policy = PrunePolicy(structure="neuron", auto=True)
    assert policy.resolved_score(model) == "unit_log_alpha"
    masks = policy.masks(model, guide)
    assert masks.unit_keep("fc1").tolist() == [False, True, True, False, True, True]
    assert PrunePolicy(auto=True).deletion_rules(model) is None  # a rule on units does not select single weights
