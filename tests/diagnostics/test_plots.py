"""The diagnostic figures are written, as PNG and SVG, one of each per figure."""
from pyrocompress.diagnostics import plot_diagnostics, posterior_view
from pyrocompress.diagnostics.plots import FIGURES


def test_every_figure_is_written_in_every_format(conv_model, tmp_path):
    model, guide = conv_model
    paths = plot_diagnostics(posterior_view(model, guide), tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{f}.{ext}" for f in FIGURES for ext in ("png", "svg"))
    assert all(p.stat().st_size > 1000 for p in paths)
    assert (tmp_path / "log_snr_hist.png").read_bytes()[:4] == b"\x89PNG"
