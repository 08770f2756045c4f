"""Export round trips: safetensors + JSON (no pickle) and TorchScript reproduce the outputs."""
import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

import pyrocompress
from pyrocompress.nn import build_model
from pyrocompress.prune.export import ExportError, export_network, load_compressed
from pyrocompress.prune.masks import Masks, layer_shapes
from pyrocompress.prune.shrink import shrink


def _small_lenet():
    torch.manual_seed(0)
    net = build_model("lenet5", (1, 8, 8), 10, channels=(6, 8), hidden=16)
    keep = {"conv1": torch.arange(6) % 2 == 0, "conv2": torch.arange(8) < 5, "fc1": torch.arange(16) < 9}
    return shrink(net, masks=Masks.from_units(keep, layer_shapes(net))).net


def test_safetensors_json_and_torchscript_round_trip(tmp_path):
    net = _small_lenet().eval()
    paths = export_network(net, tmp_path / "exp", input_shape=(1, 8, 8))
    x = torch.randn(5, 1, 8, 8)
    loaded = load_compressed(tmp_path / "exp")
    assert isinstance(loaded, nn.Sequential)
    torch.testing.assert_close(loaded(x), net(x))
    torch.testing.assert_close(pyrocompress.load_compressed(paths["safetensors"])(x), net(x))
    assert loaded.conv1.out_channels == 3 and loaded.fc1.out_features == 9
    desc = json.loads((tmp_path / "exp" / "architecture.json").read_text())
    assert [layer["name"] for layer in desc["layers"]][0] == "conv1"
    scripted = torch.jit.load(paths["torchscript"])
    torch.testing.assert_close(scripted(x), net(x))
    try:
        import onnx  # noqa: F401
    except ImportError:
        assert paths["onnx"] is None  # the optional extra is absent: skipped cleanly


def test_export_errors_name_the_layer(tmp_path):
    net = nn.Sequential(OrderedDict([("fc", nn.Linear(3, 3)), ("norm", nn.LayerNorm(3))]))
    with pytest.raises(ExportError, match="'norm'"):
        export_network(net, tmp_path / "bad")
    with pytest.raises(ExportError, match="does not exist"):
        load_compressed(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "compressed.safetensors").write_bytes(b"not a file")
    with pytest.raises(ExportError, match="corrupt"):
        load_compressed(tmp_path / "junk")
