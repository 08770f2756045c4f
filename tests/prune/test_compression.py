"""Compression metrics against hand counts and torch's own counter: parameters, multiply-adds, bytes, bit widths,
latency."""

import pytest
import torch
from torch import nn

from pyrocompress.nn import build_model
from torch.utils.flop_counter import FlopCounterMode

from pyrocompress.prune.compression import (LEGACY_KEYS, compression_report, flops, latency_of, layer_stats, macs,
                                            measure_latency, posterior_bits, quantize_network, sparse_bytes)
from pyrocompress.prune.masks import Masks, layer_shapes
from pyrocompress.prune.shrink import shrink


def test_lenet5_params_and_macs_match_hand_counts():
    net = build_model("lenet5", (1, 28, 28), 10)
    stats = layer_stats(net, (1, 28, 28))
    # conv1 20x1x5x5 -> 24x24, conv2 50x20x5x5 -> 8x8 (after 2x2 pools), fc1 800->500, fc2 500->10
    assert {n: s["params"] for n, s in stats.items()} == {"conv1": 520, "conv2": 25050, "fc1": 400500, "fc2": 5010}
    assert {n: s["macs"] for n, s in stats.items()} == {"conv1": 24 * 24 * 500, "conv2": 8 * 8 * 25000,
                                                         "fc1": 400000, "fc2": 5000}
    assert macs(net, (1, 28, 28)) == 288000 + 1600000 + 400000 + 5000
    assert sum(s["bytes_dense"] for s in stats.values()) == 4 * 431080


def test_kernelnet_counts_and_nonzero_aware_macs():
    net = build_model("kernelnet", (1, 28, 28), 10, kernels=32)
    stats = layer_stats(net, (1, 28, 28))
    assert stats["conv"]["params"] == 32 * 25 + 32 and stats["fc"]["params"] == 32 * 144 * 10 + 10
    assert stats["conv"]["macs"] == 24 * 24 * 32 * 25 and stats["fc"]["macs"] == 4608 * 10
    with torch.no_grad():
        net.conv.weight[:16] = 0
        net.fc.weight[:, :1000] = 0
    stats = layer_stats(net, (1, 28, 28))
    assert stats["conv"]["nonzero"] == 16 * 25 + 32
    assert stats["conv"]["macs_nonzero"] == 24 * 24 * 16 * 25
    assert stats["fc"]["macs_nonzero"] == 3608 * 10


@pytest.mark.parametrize("name, shape, options", [("lenet5", (1, 28, 28), {}), ("kernelnet", (1, 28, 28), {}),
                                                 ("mlp", (1, 8, 8), {"hidden": [300, 100]})])
def test_macs_are_half_the_flops_torch_counts(name, shape, options):
    """torch.utils.flop_counter counts 2 FLOPs per multiply-add of a matmul / convolution (biases aside)."""
    torch.manual_seed(0)
    net = build_model(name, shape, 10, **options).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros((1,) + shape))
    assert counter.get_total_flops() == 2 * macs(net, shape)


def test_flops_is_the_deprecated_name_of_macs_and_old_keys_map_to_new_ones():
    net = build_model("kernelnet", (1, 28, 28), 10, kernels=4)
    with pytest.warns(DeprecationWarning, match="macs"):
        assert flops(net, (1, 28, 28)) == macs(net, (1, 28, 28))
    assert LEGACY_KEYS["flops"] == "macs" and LEGACY_KEYS["flops_nonzero"] == "macs_nonzero"


def test_latency_is_timed_by_torch_benchmark_and_says_where():
    net = build_model("mlp", (1, 8, 8), 10, hidden=[16])
    info = latency_of(net, (1, 8, 8), batch_size=4, repeats=3, warmup=1, threads=1)
    assert info["seconds"] > 0 and info["device"] == "cpu" and info["threads"] == 1
    assert info["repeats"] == 3 and info["batch_size"] == 4
    with pytest.raises(ValueError, match="repeats"):
        latency_of(net, (1, 8, 8), repeats=0)


def test_sparse_bytes_by_hand():
    w = torch.tensor([[1.0, 0, 0, 2], [0, 0, 0, 0], [3, 4, 0, 5]])
    sb = sparse_bytes(w)
    assert sb["csr"] == 5 * 4 + 5 * 1 + 4 * 1  # values, 1-byte column indices, 4 row pointers
    assert sb["coo"] == 5 * 4 + 5 * 2
    assert sparse_bytes(w, value_bits=8)["csr"] == 5 + 5 + 4


def test_posterior_bits_and_quantisation():
    net = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -0.5, 0.25, 0.0]] * 3))
    bits = posterior_bits(net, {"0": torch.full((3, 4), 0.01)})
    assert bits == {"0": 1 + 7}  # log2(1 / 0.01) = 6.6 -> 7 magnitude bits + sign
    q = quantize_network(net, bits)
    step = 1.0 / (2 ** 7 - 1)
    assert float((q[0].weight - net[0].weight).abs().max().detach()) <= step / 2 + 1e-7
    assert float(q[0].weight[0, 3].detach()) == 0.0
    with pytest.raises(ValueError, match="shape"):
        posterior_bits(net, {"0": torch.ones(2, 2)})


def test_report_of_a_shrunk_network(digits):
    torch.manual_seed(0)
    dense = build_model("mlp", digits.input_shape, 10, hidden=(40, 20))
    keep = {"fc1": torch.arange(40) < 10, "fc2": torch.arange(20) < 5}
    small = shrink(dense, masks=Masks.from_units(keep, layer_shapes(dense))).net
    report = compression_report(small, digits.input_shape, reference=dense, latency_repeats=3)
    ref_params = (64 * 40 + 40) + (40 * 20 + 20) + (20 * 10 + 10)
    params = (64 * 10 + 10) + (10 * 5 + 5) + (5 * 10 + 10)
    assert report["reference_params"] == ref_params and report["params"] == params
    assert report["compression_ratio"] == pytest.approx(ref_params / params, rel=1e-3)
    assert report["speedup"] == pytest.approx((64 * 40 + 40 * 20 + 20 * 10) / (64 * 10 + 10 * 5 + 5 * 10))
    assert report["units"] == {"fc1": 10, "fc2": 5, "fc3": 10}
    assert report["latency"]["seconds"] > 0 and report["latency"]["ratio"] > 0
    assert report["latency"]["device"] == "cpu" and report["latency"]["threads"] >= 1
    assert measure_latency(small, digits.input_shape, batch_size=4, repeats=2, warmup=0) > 0
    scales = {n: torch.full_like(m.weight, 0.01) for n, m in small.named_children() if isinstance(m, nn.Linear)}
    report = compression_report(small, digits.input_shape, reference=dense, scales=scales, split=digits.test,
                                latency=False)
    assert set(report["bits"]) == {"fc1", "fc2", "fc3"} and report["bytes"]["bits"] < report["bytes"]["csr"]
    assert 0.0 <= report["quantized_accuracy"] <= 1.0
