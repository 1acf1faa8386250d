"""Every figure, checked for what a reader needs without a human: written in each format, axes labelled,
legends clear of the data, the Goldilocks band where it belongs, ticks at the values that exist, footnotes."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from randsae import plots
from randsae.lm.latents import LatentSummary
from randsae.metrics import hoyer, hoyer_batch_mean, l1_over_sqrt_l2, l1_over_sqrt_l2_batch_mean
from randsae.tables import CompareRow, SweepRow

MAGIC = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}


@pytest.fixture
def drawn(monkeypatch):
    """Every figure `_save` writes, with its notes, kept for inspection (the real `_save` still runs)."""
    figures = []
    real = plots._save

    def keep(fig, path, formats=("png",), notes=()):
        fig.canvas.draw()
        figures.append((fig, list(notes)))
        result = real(fig, path, formats, notes)
        return result
    monkeypatch.setattr(plots, "_save", keep)
    return figures


def labelled(fig) -> None:
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert axes
    for ax in axes:
        assert ax.get_xlabel() or any(a.get_xlabel() for a in ax.get_shared_x_axes().get_siblings(ax))
        assert ax.get_ylabel() or any(a.get_ylabel() for a in ax.get_shared_y_axes().get_siblings(ax))
    assert any(ax.get_title() for ax in axes) or fig._suptitle is not None


def legends_clear_of_data(fig) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure was closed after saving: draw it afresh
    fig.draw(renderer)
    boxes = [ax.get_legend().get_window_extent(renderer) for ax in fig.axes if ax.get_legend()]
    for ax in fig.axes:
        points = []
        for line in ax.get_lines():
            xy = np.column_stack(line.get_data()).astype(float)
            points.append(ax.transData.transform(xy[np.isfinite(xy).all(1)]))
        for collection in ax.collections:
            offsets = collection.get_offsets()
            if len(offsets):
                points.append(ax.transData.transform(np.asarray(offsets, dtype=float)))
        for box in boxes:
            for xy in points:
                inside = ((xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1))
                assert not inside.any(), "a legend covers plotted data"


def toy_rows(seeds=(0, 1)):
    rows = []
    coefs = np.logspace(-3, 2, 11)
    for seed in seeds:
        for size, peak in ((512, 0.95), (1024, 0.8)):
            for i, c in enumerate(coefs):
                mmcs = peak * math.exp(-((i - 5) / 2.5) ** 2) + 0.01 * seed
                for data, transform in (("sharkey", "none"), ("sharkey", "mlp"), ("gaussian", "none")):
                    truth = (data, transform) == ("sharkey", "none")
                    rows.append(SweepRow(data, transform, 16, size, float(c), seed, 10,
                                         mmcs=mmcs if truth else None, explained_variance=1 - i / 12,
                                         l0=max(0.0, 40 - 4 * i) * (i < 9), hoyer=i / 11))
    return rows


def test_goldilocks_range_interpolates_in_log_space():
    low, high = plots.goldilocks_range([0.001, 0.01, 0.1, 1], [0.5, 0.95, 0.92, 0.3])
    assert math.log10(low) == pytest.approx(-2 - (0.05 / 0.45))
    assert math.log10(high) == pytest.approx(-1 + 0.02 / 0.62)
    assert plots.goldilocks_range([0.1, 1], [0.5, 0.6]) is None
    assert plots.goldilocks_range([0.1, 1, 10], [0.95, 0.95, 0.2])[0] == pytest.approx(0.1)  # at the sweep's edge


@pytest.mark.parametrize("formats", [("png",), ("png", "pdf", "svg")])
def test_toy_figures_stand_alone_in_every_format(drawn, tmp_path, formats):
    written = plots.plot_results(toy_rows(), tmp_path, formats=formats)
    assert [p.name for p in written] == ["mmcs.png", "frontier_l0.png", "frontier_hoyer.png"]
    for stem in ("mmcs", "frontier_l0", "frontier_hoyer"):
        for fmt in formats:
            assert (tmp_path / f"{stem}.{fmt}").read_bytes().startswith(MAGIC[fmt])
    (mmcs, mmcs_notes), (l0, l0_notes), (hoy, _) = drawn[-3:]
    for fig in (mmcs, l0, hoy):
        labelled(fig)
        legends_clear_of_data(fig)
    ax = mmcs.axes[0]
    bands = [p for p in ax.patches if p.get_width() > 0] if ax.patches else []
    assert len(bands) == 1  # 512 latents reach 0.9, 1024 do not
    assert "Feature recovery" in ax.get_title() and "Sharkey toy data" in ax.get_title()
    assert any("standard error over 2 seeds" in n for n in mmcs_notes)
    ticks = ax.get_xticks()
    np.testing.assert_allclose(sorted(ticks), np.logspace(-3, 2, 11))
    assert l0.axes[0].get_shared_x_axes().joined(l0.axes[0], l0.axes[1])
    assert l0.axes[0].get_ylim() == l0.axes[1].get_ylim()
    assert any("L0 < 1" in n for n in l0_notes)


def test_one_seed_says_so(drawn, tmp_path):
    plots.plot_mmcs(toy_rows(seeds=(0,)), tmp_path / "mmcs.png")
    assert "1 seed: no error bars." in drawn[-1][1]


def test_no_band_is_said_when_no_size_reaches_it(drawn, tmp_path):
    rows = [dataclasses.replace(r, mmcs=0.5) if r.mmcs is not None else r for r in toy_rows()]
    plots.plot_mmcs(rows, tmp_path / "mmcs.png")
    fig, notes = drawn[-1]
    assert not fig.axes[0].patches and any("no size reaches 0.9" in n for n in notes)


def lm_rows():
    rows = []
    for variant, ce in (("trained", 0.97), ("rerandomized", 0.5), ("control", 1.1)):
        for layer in (3, 9, 15):
            rows.append(CompareRow("smollm2", variant, layer, explained_variance=0.8, pca_explained_variance=0.6,
                                   cosine_sim=0.9, l1=200, dead_fraction=0.01, ce_loss_score=ce,
                                   entropy_mean=2.0 + layer / 10, entropy_std=0.3))
    return rows


def test_lm_comparison_ticks_layers_marks_ce_and_says_what_qualifies_it(drawn, tmp_path):
    path = plots.plot_lm_comparison(lm_rows(), tmp_path / "comparison.png", notes=["CE loss score: meaningful "
                                                                                   "for the trained model only"],
                                    formats=("svg",))
    assert path.suffix == ".svg" and path.read_bytes().startswith(MAGIC["svg"])
    fig, notes = drawn[-1]
    labelled(fig)
    legends_clear_of_data(fig)
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [3, 9, 15]
    ce = next(ax for ax in fig.axes if ax.get_ylabel() == "CE loss score")
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in ce.get_lines())
    assert notes == ["CE loss score: meaningful for the trained model only"]
    colours = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    assert colours["control"] == plots.VARIANT_COLOURS["control"]  # the same colour in every figure


def test_entropy_histograms_and_lomax(drawn, tmp_path):
    rng = np.random.default_rng(0)
    summaries = [LatentSummary("m", variant, layer, i, 0.01, 10, 5, 1.0, float(rng.uniform(0, 4)), 1.0, True, True,
                               [1], [1.0], ["a"]) for variant in ("trained", "control") for layer in (3, 9)
                 for i in range(20)]
    plots.plot_entropy_histograms(summaries, tmp_path / "entropy.png")
    fig, notes = drawn[-1]
    labelled(fig)
    legends_clear_of_data(fig)
    assert "nats" in fig.axes[0].get_xlabel() and any("ln n" in n for n in notes)
    from randsae.data import lomax

    demo = lomax.generate(500)
    plots.plot_lomax(demo.inputs.numpy(), demo.outputs.numpy(), tmp_path / "lomax.png", formats=("pdf",))
    assert (tmp_path / "lomax.pdf").read_bytes().startswith(MAGIC["pdf"])
    labelled(drawn[-1][0])


def test_bad_formats_are_refused():
    assert plots.parse_formats("png, PDF,svg,png") == ["png", "pdf", "svg"]
    with pytest.raises(ValueError, match="--format takes"):
        plots.parse_formats("jpeg")


def test_sparsity_stats_the_authors_way_differ_for_collapsed_saes():
    z = torch.zeros(4, 8)
    z[0, :2] = torch.tensor([3.0, 1.0])  # one active sample, three collapsed
    assert hoyer(z) == pytest.approx((3 * 1 + (math.sqrt(8) - 4 / math.sqrt(10)) / (math.sqrt(8) - 1)) / 4)
    assert hoyer_batch_mean(z) == pytest.approx((math.sqrt(8) - 1 / (math.sqrt(10) / 4)) / (math.sqrt(8) - 1))
    assert l1_over_sqrt_l2(z) == pytest.approx(4 / math.sqrt(math.sqrt(10)) / 4)
    assert l1_over_sqrt_l2_batch_mean(z) == pytest.approx(1 / math.sqrt(math.sqrt(10) / 4))
    assert hoyer_batch_mean(torch.zeros(3, 8)) == 1.0


def test_a_reason_many_cells_share_is_said_once():
    """The verdict's matrices (figure, report, markdown) mark a not-comparable reason shared by three or more
    cells (a), (b), … and say it once under them; a reason of one or two cells stays in its cells."""
    from types import SimpleNamespace

    from randsae.study.evidence import shared_reasons

    def cell(outcome, text):
        return SimpleNamespace(outcome=outcome, text=text)

    learning, below = "the trained model's SAE is still learning", "step0's SAE is below its baselines"
    cells = [[cell("not comparable", learning), cell("not comparable", below), cell("differs", "+0.1")]
             for _ in range(3)] + [[cell("not comparable", "one alone"), cell("not comparable", learning),
                                    cell("same", "+0.0")]]
    assert shared_reasons([(3, ["m"] * 4, ["a", "b", "c"], cells)]) == {learning: "(a)", below: "(b)"}


def test_the_verdict_figure_names_its_model_its_colours_its_sign_and_says_each_reason_once(tmp_path, monkeypatch):
    """The README's picture: a title naming the model, blocks and seeds; a legend of the four outcomes; the
    sign convention; each shared reason once under it (it was said twice)."""
    from randsae import plots
    from randsae.study.evidence import draw_verdict
    from randsae.study.verdict import VerdictRow

    drawn = []
    real_save = plots._save

    def keep(fig, path, formats=("png",), notes=()):
        texts = [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]
        drawn.append((texts, [t.get_text() for legend in fig.legends for t in legend.get_texts()], list(notes)))
        return real_save(fig, path, formats, notes)

    monkeypatch.setattr(plots, "_save", keep)
    learning = "the trained model's SAE is still learning"
    rows = [VerdictRow(layer, metric, twin, "not comparable", seeds=2, reason=learning)
            for layer in (3, 9) for metric in ("explained_variance", "l1") for twin in ("rerandomized", "step0")]
    rows.append(VerdictRow(3, "entropy_mean", "control", "differs", difference=0.2, low95=0.1, high95=0.3,
                           seeds=2))
    path = draw_verdict(rows, tmp_path / "verdict.png", "smollm2")
    assert path.is_file() and path.stat().st_size > 10_000
    texts, legend, notes = drawn[0]
    assert any("smollm2" in t and "blocks 3, 9" in t and "2 seeds" in t for t in texts)
    assert any("positive: the trained model's is higher" in t for t in texts)
    assert [label.split(":")[0] for label in legend] == ["differs", "the same within ±δ", "cannot tell",
                                                         "not comparable"]
    assert sum(learning in n for n in notes) == 1 and not any(learning in t for t in texts)  # said under it, once
    assert "+0.200 [+0.100, +0.300]" in texts
