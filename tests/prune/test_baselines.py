"""Magnitude-pruning baselines: exact selections, seeded randomness, IMP / lottery / gradual schedules."""
from __future__ import annotations

import copy
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from pyrocompress.data import from_arrays
from pyrocompress.infer import fit_deterministic, make_guide
from pyrocompress.infer.predictive import evaluate
from pyrocompress.nn import BayesianModel, build_model
from pyrocompress.prune import baselines as B
from pyrocompress.prune.baselines import lottery as lottery_module
from pyrocompress.prune.methods import check_method_fits
from pyrocompress.prune.masks import Masks
from pyrocompress.prune.shrink import shrink

FIT = {"device": "cpu", "batch_size": 64, "lr": 3e-3}


def tiny_net() -> nn.Sequential:
    net = nn.Sequential(OrderedDict([("fc1", nn.Linear(2, 2)), ("relu", nn.ReLU()), ("fc2", nn.Linear(2, 2))]))
    with torch.no_grad():
        net.fc1.weight.copy_(torch.tensor([[0.1, -0.5], [0.3, 0.05]]))
        net.fc2.weight.copy_(torch.tensor([[-0.2, 0.4], [0.01, 0.7]]))
        net.fc1.bias.copy_(torch.tensor([0.02, -0.03]))
        net.fc2.bias.copy_(torch.tensor([0.001, 0.5]))
    return net


@pytest.fixture(scope="module")
def small_data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(240, 12, generator=gen)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    return from_arrays(x[:200], y[:200], x[200:], y[200:], name="toy", val_fraction=0.1, seed=0)


def small_mlp(data, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model("mlp", data.input_shape, data.num_classes, hidden=(16, 8))


# ----------------------------------------------------------------- one-shot
def test_global_magnitude_removes_exactly_the_smallest_weights_hand_checked():
    net = tiny_net()
    res = B.one_shot(net, 3 / 8, scope="global")
    # the three smallest |w| across both layers: 0.01 (fc2[1,0]), 0.05 (fc1[1,1]), 0.1 (fc1[0,0])
    assert res.masks.weight["fc1"].tolist() == [[False, True], [True, False]]
    assert res.masks.weight["fc2"].tolist() == [[True, True], [False, True]]
    torch.testing.assert_close(res.net.fc1.weight.detach(), torch.tensor([[0.0, -0.5], [0.3, 0.0]]))
    torch.testing.assert_close(res.net.fc2.weight.detach(), torch.tensor([[-0.2, 0.4], [0.0, 0.7]]))
    assert res.net.fc1.bias.tolist() == pytest.approx([0.02, -0.03])  # unstructured: biases untouched
    assert res.sparsity == pytest.approx(3 / 8)
    assert float(net.fc1.weight[0, 0].detach()) == pytest.approx(0.1)  # the input network is not modified
    # the same selection as torch.nn.utils.prune's global L1 pruning
    ref = tiny_net()
    tprune.global_unstructured([(ref.fc1, "weight"), (ref.fc2, "weight")], pruning_method=tprune.L1Unstructured,
                               amount=3)
    assert torch.equal(ref.fc1.weight_mask.bool(), res.masks.weight["fc1"])
    assert torch.equal(ref.fc2.weight_mask.bool(), res.masks.weight["fc2"])


def test_per_layer_sparsities_are_reached_exactly(small_data):
    net = small_mlp(small_data)
    res = B.one_shot(net, 0.6, scope="layer")
    for name, layer in B.prunable_layers(net):
        mask = res.masks.weight[name]
        n = mask.numel()
        assert int((~mask).sum()) == round(0.6 * n)
        w = layer.weight.detach().abs()
        assert w[~mask].max() <= w[mask].min()  # each layer loses its own smallest weights
        assert torch.equal(res.net.get_submodule(name).weight != 0, mask)


def test_global_scope_differs_from_layer_scope_and_ranks_across_layers(small_data):
    net = small_mlp(small_data)
    with torch.no_grad():
        net.fc3.weight.mul_(100.0)  # the output layer's weights now dominate every global ranking
    res = B.one_shot(net, 0.5, scope="global")
    assert bool(res.masks.weight["fc3"].all())
    all_w = torch.cat([net.get_submodule(n).weight.detach().abs().flatten() for n in ("fc1", "fc2", "fc3")])
    kept = torch.cat([res.masks.weight[n].flatten() for n in ("fc1", "fc2", "fc3")])
    assert all_w[~kept].max() <= all_w[kept].min()


def test_random_pruning_is_seeded_and_reproducible(small_data):
    net = small_mlp(small_data)
    a = B.random_prune(net, 0.6, seed=3)
    b = B.random_prune(net, 0.6, seed=3)
    c = B.random_prune(net, 0.6, seed=4)
    for name in a.masks.weight:
        assert torch.equal(a.masks.weight[name], b.masks.weight[name])
    assert any(not torch.equal(a.masks.weight[n], c.masks.weight[n]) for n in a.masks.weight)
    assert a.sparsity == pytest.approx(0.6, abs=1 / 344)  # 344 weights: exact up to rounding
    torch.manual_seed(123)  # the global RNG does not matter
    d = B.random_prune(net, 0.6, seed=3)
    assert all(torch.equal(a.masks.weight[n], d.masks.weight[n]) for n in a.masks.weight)
    s1 = B.random_prune(net, 0.5, structure="neuron", scope="layer", seed=1)
    s2 = B.random_prune(net, 0.5, structure="neuron", scope="layer", seed=1)
    assert s1.masks.bias["fc1"].tolist() == s2.masks.bias["fc1"].tolist()
    assert int(s1.masks.bias["fc1"].sum()) == 8 and int(s1.masks.bias["fc2"].sum()) == 4


def test_structured_norm_pruning_of_kernels_and_physical_shrink(digits):
    torch.manual_seed(0)
    net = build_model("kernelnet", digits.input_shape, digits.num_classes, kernels=8, kernel_size=3)
    with torch.no_grad():
        net.conv.weight[[1, 4, 6]] *= 0.01  # three clearly weak kernels
    for score in ("l1", "l2"):
        res = B.one_shot(net, 3 / 8, structure="kernel", score=score)
        keep = res.masks.unit_keep("conv")
        assert keep.tolist() == [True, False, True, True, False, True, False, True]
        assert not bool(res.masks.bias["conv"][1])
        assert "fc" not in res.masks.weight  # the output layer is never a structured candidate
        small = shrink(res.net).net
        assert small.conv.out_channels == 5
        x = digits.test.x[:32]
        torch.testing.assert_close(small(x), res.net(x), atol=1e-5, rtol=1e-5)


def test_l1_and_l2_rank_neurons_by_their_own_norms():
    net = nn.Sequential(OrderedDict([("fc1", nn.Linear(4, 3)), ("relu", nn.ReLU()), ("fc2", nn.Linear(3, 2))]))
    with torch.no_grad():
        # row 0: L1 = 1.0, L2 = 1.0; row 1: L1 = 1.2, L2 = 0.6; row 2: large
        net.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0.3, 0.3, 0.3, 0.3], [2.0, 2.0, 0, 0]]))
    l1 = B.one_shot(net, 1 / 3, structure="neuron", score="l1")
    l2 = B.one_shot(net, 1 / 3, structure="neuron", score="l2")
    assert l1.masks.unit_keep("fc1").tolist() == [False, True, True]
    assert l2.masks.unit_keep("fc1").tolist() == [True, False, True]


# ----------------------------------------------------------------- IMP
def test_imp_reaches_target_after_the_stated_rounds_with_nested_masks(small_data):
    net = small_mlp(small_data)
    base = B.Budget(train_epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching the target must not warn
        res = B.iterative_magnitude(net, small_data, 0.8, rounds=4, finetune_epochs=1, fit_options=FIT,
                                    base_budget=base)
    expected = B.geometric_schedule(0.8, 4)
    assert [h["target_sparsity"] for h in res.history] == pytest.approx(expected)
    # exact up to rounding, and the policy's safeguard (every output unit keeps a weight) of 344 weights
    assert [h["sparsity"] for h in res.history] == pytest.approx(expected, abs=2 / 344)
    assert res.sparsity == pytest.approx(0.8, abs=2 / 344)
    for before, after in zip(res.history, res.history[1:]):
        assert after["sparsity"] > before["sparsity"]
    assert res.budget.train_epochs == 3 and res.budget.finetune_epochs == 4 and res.budget.total_epochs == 7
    assert res.budget.seconds > 0
    for name, layer in B.prunable_layers(res.net):  # pruned weights stayed exactly zero through fine-tuning
        assert bool((layer.weight[~res.masks.weight[name]] == 0).all())


def test_imp_fine_tuning_beats_one_shot_at_90_percent_on_digits(digits):
    torch.manual_seed(0)
    net = build_model("mlp", digits.input_shape, digits.num_classes, hidden=(64, 32))
    fit_deterministic(net, digits, epochs=8, seed=0, **FIT)
    one = evaluate(B.one_shot(net, 0.9).net, digits.test)["accuracy"]
    imp = B.iterative_magnitude(net, digits, 0.9, rounds=3, finetune_epochs=2, seed=0, fit_options=FIT)
    acc = evaluate(imp.net, digits.test)["accuracy"]
    assert imp.sparsity == pytest.approx(0.9, abs=1e-3)
    assert acc >= one + 0.15, (acc, one)  # seen: ~0.92 vs ~0.66


def test_imp_with_zero_rounds_warns_and_bad_counts_are_refused(small_data):
    net = small_mlp(small_data)
    with pytest.warns(RuntimeWarning, match="reached 0.0000"):
        res = B.iterative_magnitude(net, small_data, 0.5, rounds=0, finetune_epochs=1, fit_options=FIT)
    assert res.sparsity == 0.0
    with pytest.raises(ValueError, match="rounds"):
        B.iterative_magnitude(net, small_data, 0.5, rounds=-1)
    with pytest.raises(ValueError, match="finetune_epochs"):
        B.iterative_magnitude(net, small_data, 0.5, rounds=2, finetune_epochs=-1)
    with pytest.raises(ValueError, match="finetune_epochs"):
        B.one_shot(net, 0.5, data=small_data, finetune_epochs=-2)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        B.one_shot(net, 1.0)


# ----------------------------------------------------------------- lottery
def test_lottery_reaches_target_and_rewinds_to_the_initial_weights(small_data):
    init = small_mlp(small_data)
    res = B.lottery_ticket(init, small_data, sparsity=0.75, rounds=3, train_epochs=2, fit_options=FIT)
    assert res.sparsity == pytest.approx(0.75, abs=2e-3)
    # the output layer is pruned at half the hidden layers' per-round rate
    assert res.config["output_rate"] == pytest.approx(res.config["rate"] / 2)
    out_sparsity = 1 - float(res.masks.weight["fc3"].float().mean())
    hidden_sparsity = 1 - float(res.masks.weight["fc1"].float().mean())
    assert out_sparsity == pytest.approx(1 - (1 - res.config["output_rate"]) ** 3, abs=0.02)
    assert hidden_sparsity == pytest.approx(1 - (1 - res.config["rate"]) ** 3, abs=0.01)
    init_state = init.state_dict()
    for name in ("fc1", "fc2", "fc3"):
        key = f"{name}.weight"
        mask = res.masks.weight[name]
        torch.testing.assert_close(res.stored["init"][key], init_state[key])
        assert torch.equal(res.ticket[key][mask], init_state[key][mask])
        assert bool((res.ticket[key][~mask] == 0).all())
        assert bool((res.net.get_submodule(name).weight[~mask] == 0).all())
    assert res.budget.train_epochs == 2 and res.budget.finetune_epochs == 6


def test_lottery_rewinds_to_an_early_epoch(small_data):
    init = small_mlp(small_data)
    res = B.lottery_ticket(init, small_data, rounds=2, rate=0.2, train_epochs=3, rewind_epoch=1, fit_options=FIT)
    early = copy.deepcopy(init)
    fit_deterministic(early, small_data, epochs=1, seed=0, **FIT)  # same seed and data order
    for name in ("fc1", "fc2", "fc3"):
        key = f"{name}.weight"
        torch.testing.assert_close(res.stored["rewind"][key], early.state_dict()[key])
        mask = res.masks.weight[name]
        assert torch.equal(res.ticket[key][mask], res.stored["rewind"][key][mask])
    assert not torch.equal(res.stored["rewind"]["fc1.weight"], res.stored["init"]["fc1.weight"])
    # without a target: 20% per round for two rounds (output layer 10%)
    assert 1 - float(res.masks.weight["fc1"].float().mean()) == pytest.approx(1 - 0.8 ** 2, abs=0.01)
    assert res.budget.finetune_epochs == 2 * (3 - 1)


def test_lottery_from_a_trained_state_counts_its_budget(small_data):
    init = small_mlp(small_data)
    trained = copy.deepcopy(init)
    fit_deterministic(trained, small_data, epochs=2, seed=0, **FIT)
    res = B.lottery_ticket(init, small_data, sparsity=0.5, rounds=2, train_epochs=2,
                           trained_state=trained.state_dict(), base_budget=B.Budget(train_epochs=2), fit_options=FIT)
    assert res.budget.total_epochs == 2 + 2 * 2
    assert res.sparsity == pytest.approx(0.5, abs=2e-3)
    with pytest.raises(ValueError, match="rewind_epoch"):
        B.lottery_ticket(init, small_data, rounds=1, train_epochs=2, rewind_epoch=2)


def test_lottery_schedule_reaches_each_entry_and_equals_the_constant_rate_walk(small_data):
    init = small_mlp(small_data)
    # a schedule made of the constant-rate walk's own sparsities gives the same masks and weights
    plain = B.lottery_ticket(copy.deepcopy(init), small_data, rounds=2, rate=0.3, train_epochs=1, fit_options=FIT)
    walked = [row["target_sparsity"] for row in plain.history[1:]]
    sched = B.lottery_ticket(copy.deepcopy(init), small_data, schedule=walked, rate=0.3, train_epochs=1,
                             fit_options=FIT)
    for name in plain.masks.weight:
        assert torch.equal(plain.masks.weight[name], sched.masks.weight[name])
    torch.testing.assert_close(plain.net.state_dict(), sched.net.state_dict())
    # an uneven schedule: every round lands on its entry
    res = B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.3, 0.7, 0.8], train_epochs=1,
                           fit_options=FIT)
    assert [r["sparsity"] for r in res.history[1:]] == pytest.approx([0.3, 0.7, 0.8], abs=5e-3)
    assert res.budget.finetune_epochs == 3
    for bad in ([], [0.5, 0.4], [0.2, 1.0]):
        with pytest.raises(ValueError):
            B.lottery_ticket(copy.deepcopy(init), small_data, schedule=bad, train_epochs=1, fit_options=FIT)
    with pytest.raises(ValueError, match="disagrees"):
        B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.3, 0.6], sparsity=0.5, train_epochs=1)


def test_lottery_round_cache_shares_a_trajectory_prefix_and_refuses_other_plans(small_data, tmp_path, monkeypatch):
    init = small_mlp(small_data)
    trained = copy.deepcopy(init)
    fit_deterministic(trained, small_data, epochs=1, seed=0, **FIT)
    common = dict(train_epochs=1, trained_state=trained.state_dict(), fit_options=FIT, seed=3)
    fresh = B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.5, 0.75, 0.875], **common)
    deep = B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.5, 0.75, 0.875], cache_dir=tmp_path,
                            **common)
    torch.testing.assert_close(deep.net.state_dict(), fresh.net.state_dict())  # caching changes nothing
    fits = []
    real_fit = lottery_module.fit_net
    monkeypatch.setattr(lottery_module, "fit_net", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    # a shallower point of the same trajectory: every round comes from the cache, no training
    short = B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.5, 0.75], cache_dir=tmp_path, **common)
    assert fits == []
    ref = B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.5, 0.75], **common)
    fits.clear()
    torch.testing.assert_close(short.net.state_dict(), ref.net.state_dict())
    torch.testing.assert_close(short.ticket, ref.ticket)
    assert short.budget.finetune_epochs == 2 and len(short.history) == 3  # cached rounds still count
    # a deeper point trains only the rounds past the cached ones
    B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.5, 0.75, 0.875, 0.9], cache_dir=tmp_path, **common)
    assert len(fits) == 1
    fits.clear()
    # another plan (or another seed) never reads those rounds
    B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.5, 0.8], cache_dir=tmp_path, **common)
    assert len(fits) == 1
    fits.clear()
    B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.5], cache_dir=tmp_path, **dict(common, seed=4))
    assert len(fits) == 1
    # a corrupt round file is ignored with a warning and trained again
    for f in tmp_path.rglob("round1.safetensors"):
        f.write_bytes(b"not a checkpoint")
    fits.clear()
    with pytest.warns(UserWarning, match="unreadable"):
        B.lottery_ticket(copy.deepcopy(init), small_data, schedule=[0.5], cache_dir=tmp_path, **common)
    assert len(fits) == 1
    assert not list(tmp_path.rglob("*.lock"))  # every lock released


# ----------------------------------------------------------------- gradual
def test_gradual_follows_the_cubic_schedule_and_reaches_the_target(small_data):
    net = small_mlp(small_data)
    res = B.gradual_magnitude(net, small_data, 0.8, epochs=4, pruning_steps=8, fit_options=FIT)
    targets = [h["target_sparsity"] for h in res.history]
    assert targets[0] == pytest.approx(0.0) and targets[-1] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(targets, targets[1:]))
    end = round(0.75 * 4 * 3)  # 3 steps per epoch (180 examples, batches of 64); ends at 3/4 of training
    for h in res.history:  # Zhu & Gupta's cubic schedule, evaluated at each pruning step
        assert h["target_sparsity"] == pytest.approx(0.8 * (1 - (1 - min(h["step"] / end, 1.0)) ** 3))
        assert h["sparsity"] == pytest.approx(h["target_sparsity"], abs=2 / 344)
    assert res.history[-1]["step"] == end
    assert res.sparsity == pytest.approx(0.8, abs=2e-3)
    assert res.budget.finetune_epochs == 4
    for name, layer in B.prunable_layers(res.net):
        assert bool((layer.weight[~res.masks.weight[name]] == 0).all())


def test_gradual_schedule_that_ends_after_training_warns_with_the_reached_value(small_data):
    net = small_mlp(small_data)
    with pytest.warns(RuntimeWarning, match=r"reached 0\.\d+"):
        res = B.gradual_magnitude(net, small_data, 0.9, epochs=2, end_epoch=4, fit_options=FIT)
    assert 0.0 < res.sparsity < 0.9


# ----------------------------------------------------------------- interfaces and bad input
def test_scores_that_do_not_fit_are_refused_with_the_valid_names(small_data):
    net = small_mlp(small_data)
    with pytest.raises(ValueError, match="needs a posterior.*magnitude"):
        B.one_shot(net, 0.5, score="snr")
    with pytest.raises(ValueError, match="valid scores for a deterministic network"):
        B.one_shot(net, 0.5, score="bogus")
    model = BayesianModel.from_module(small_mlp(small_data), small_data.num_classes)
    guide = make_guide(model)
    with pytest.raises(ValueError, match="deterministic-network score"):
        B.importances(model, "l1", guide=guide)
    with pytest.raises(ValueError, match="does not fit a Bayesian run"):
        check_method_fits("imp", bayesian=True)
    assert check_method_fits("magnitude", bayesian=True) == "magnitude"
    with pytest.raises(TypeError, match="plain network"):
        B.one_shot(model, 0.5)


def test_posterior_mean_magnitude_score_on_a_bayesian_model(small_data):
    model = BayesianModel.from_module(small_mlp(small_data), small_data.num_classes)
    guide = make_guide(model)
    with torch.no_grad():
        guide.loc["fc1__weight"].normal_()
    scores = B.importances(model, "magnitude", guide=guide)
    torch.testing.assert_close(scores["fc1"], guide.loc_of("fc1.weight").abs())
    groups = B.importances(model, "magnitude", structure="neuron", guide=guide)
    torch.testing.assert_close(groups["fc1"], guide.loc_of("fc1.weight").norm(dim=1))
    masks = B.select_masks(model.architecture, scores, 0.5)  # the same policy selects from posterior scores
    assert isinstance(masks, Masks) and masks.sparsity() == pytest.approx(0.5, abs=1e-2)


def test_allocate_budget_gives_every_method_the_same_total():
    assert B.allocate_budget("magnitude", 12, base_epochs=10) == {"finetune_epochs": 2}
    imp = B.allocate_budget("imp", 20, base_epochs=10, rounds=3)["finetune_epochs"]
    assert sum(imp) == 10 and len(imp) == 3
    assert B.allocate_budget("gradual", 20, base_epochs=10) == {"epochs": 10}
    lottery = B.allocate_budget("lottery", 20, base_epochs=10, rounds=5)
    assert 10 + 5 * lottery["train_epochs"] == 20
    with pytest.raises(ValueError, match="below"):
        B.allocate_budget("imp", 5, base_epochs=10, rounds=2)


def test_to_torch_prune_reparametrises_with_the_same_masks(small_data):
    net = small_mlp(small_data)
    res = B.one_shot(net, 0.5)
    fresh = B.to_torch_prune(copy.deepcopy(net), res.masks)
    x = small_data.test.x
    torch.testing.assert_close(fresh(x), res.net(x))
    assert hasattr(fresh.fc1, "weight_orig")
