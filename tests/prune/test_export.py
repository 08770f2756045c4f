"""Export round trips: safetensors + JSON (no pickle), CSR and quantised CSR, ExportedProgram, ONNX under
onnxruntime and TorchScript reproduce the outputs; the sparse file is the size the report claims."""
import json
import sys
from collections import OrderedDict

import pytest
import torch
from torch import nn

import pyrocompress
from pyrocompress.nn import build_model
from pyrocompress.prune.compression import compression_report, quantize_network
from pyrocompress.prune.export import (EXPORTED_FILE, QUANTIZED_FILE, SPARSE_FILE, WEIGHTS_FILE, ExportError,
                                       export_network, load_compressed)
from pyrocompress.prune.masks import Masks, layer_shapes
from pyrocompress.prune.shrink import shrink


def _small_lenet():
    torch.manual_seed(0)
    net = build_model("lenet5", (1, 8, 8), 10, channels=(6, 8), hidden=16)
    keep = {"conv1": torch.arange(6) % 2 == 0, "conv2": torch.arange(8) < 5, "fc1": torch.arange(16) < 9}
    return shrink(net, masks=Masks.from_units(keep, layer_shapes(net))).net


def test_safetensors_json_and_torchscript_round_trip(tmp_path):
    net = _small_lenet().eval()
    paths = export_network(net, tmp_path / "exp", input_shape=(1, 8, 8), torchscript=True)  # TorchScript: asked for
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


def _unstructured_mlp(sparsity=0.9, seed=0):
    """An MLP with ``sparsity`` of its weights zeroed at random (what unstructured pruning leaves)."""
    torch.manual_seed(seed)
    net = build_model("mlp", (1, 8, 8), 10, hidden=[300, 100]).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_((torch.rand_like(m.weight) >= sparsity).float())
    return net


def _tensor_bytes(path):
    """Bytes of a safetensors file's tensor data (the file less its 8-byte length and JSON header)."""
    raw = path.read_bytes()
    return len(raw) - 8 - int.from_bytes(raw[:8], "little")


def test_sparse_export_round_trips_exactly_and_is_the_size_the_report_claims(tmp_path):
    net = _unstructured_mlp()
    paths = export_network(net, tmp_path / "exp", input_shape=(1, 8, 8), exported_program=False)
    loaded = load_compressed(tmp_path / "exp", kind="csr")
    for key, value in net.state_dict().items():  # bit for bit
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(pyrocompress.load_compressed(paths["csr"]).state_dict()["fc1.weight"], net.fc1.weight)
    report = compression_report(net, (1, 8, 8), latency=False)
    assert _tensor_bytes(tmp_path / "exp" / SPARSE_FILE) == report["bytes"]["csr"]
    dense = (tmp_path / "exp" / WEIGHTS_FILE).stat().st_size
    sparse = (tmp_path / "exp" / SPARSE_FILE).stat().st_size
    assert sparse < 0.25 * dense  # 10% of the weights, 1-2 byte indices
    assert paths["quantized"] is None  # no bit widths given


def test_quantised_export_rebuilds_the_quantised_network_at_its_bit_widths(tmp_path):
    net = _unstructured_mlp(0.8, seed=1)
    scales = {name: torch.full_like(m.weight, 0.01) for name, m in net.named_modules()
              if isinstance(m, nn.Linear)}
    report = compression_report(net, (1, 8, 8), scales=scales, latency=False)
    paths = export_network(net, tmp_path / "q", input_shape=(1, 8, 8), exported_program=False, bits=report["bits"])
    loaded = load_compressed(tmp_path / "q", kind="quantized")
    expected = quantize_network(net, report["bits"])
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # the report's size at those widths, whole bytes per layer
    data = _tensor_bytes(tmp_path / "q" / QUANTIZED_FILE)
    assert abs(data - report["bytes"]["bits"]) < len(report["bits"])
    assert data < _tensor_bytes(tmp_path / "q" / SPARSE_FILE)
    assert paths["quantized"].endswith(QUANTIZED_FILE)


def test_exported_program_runs_any_batch_without_pyrocompress(tmp_path):
    net = _small_lenet().eval()
    paths = export_network(net, tmp_path / "exp", input_shape=(1, 8, 8))
    assert paths["pt2"].endswith(EXPORTED_FILE) and paths["onnx"] is None and paths["torchscript"] is None
    program = torch.export.load(paths["pt2"]).module()
    for batch in (1, 7):
        x = torch.randn(batch, 1, 8, 8)
        torch.testing.assert_close(program(x), net(x))


def test_onnx_matches_the_network_under_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'pyrocompress[onnx]')")
    net = _small_lenet().eval()
    paths = export_network(net, tmp_path / "exp", input_shape=(1, 8, 8), exported_program=False, onnx=True)
    session = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    for batch in (1, 9):
        x = torch.randn(batch, 1, 8, 8)
        (logits,) = session.run(["logits"], {"input": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), net(x).detach(), rtol=1e-5, atol=1e-5)


def test_onnx_without_its_packages_says_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["pyrocompress.prune.export"], "find_spec", lambda name: None)
    with pytest.raises(ExportError, match=r"pip install 'pyrocompress\[onnx\]'"):
        export_network(_small_lenet(), tmp_path / "exp", input_shape=(1, 8, 8), onnx=True)
    with pytest.raises(ExportError, match="input_shape"):
        export_network(_small_lenet(), tmp_path / "exp2", onnx=True)
    with pytest.raises(ExportError, match="valid kinds"):
        load_compressed(tmp_path / "exp2", kind="zip")
