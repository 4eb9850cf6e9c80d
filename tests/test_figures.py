"""Figures: their data beside them as CSV, and the same figure as the same bytes."""

import csv

import matplotlib.pyplot as plt
import numpy as np
import pytest

from cortex_jax.figures import plots


def test_a_masking_curve_writes_its_data_and_is_reproducible(tmp_path):
    series = {"tis": ([0.9, 0.5, 0.2], [0.01, 0.02, 0.03]), "random": ([0.9, 0.8, 0.7], [0, 0, 0])}
    paths = [plots.masking_curve(tmp_path / d / "c", [1, 2, 3], series, "t") for d in ("a", "b")]
    rows = list(csv.reader((tmp_path / "a" / "c.csv").open()))
    assert rows[0] == ["n", "tis mean", "tis se", "random mean", "random se"]
    np.testing.assert_allclose([float(x) for x in rows[2]], [2, 0.5, 0.02, 0.8, 0])
    for suffix in (".png", ".svg"):
        a, b = (p.with_suffix(suffix).read_bytes() for p in paths)
        assert a == b, suffix
    assert b"<dc:date>" not in paths[0].with_suffix(".svg").read_bytes()


def test_edit_frames_have_step_labels_an_outlined_region_and_p_target():
    frames = np.zeros((3, 16, 16, 3))
    region = np.zeros((4, 4), bool)
    region[1:3, 1:3] = True  # token positions (1..2, 1..2): pixels 4..11 of 16
    fig = plots.frames_figure(
        frames, ["start", "step 10", "step 20"], "edit", region, [0.1, 0.25, 0.9], "blue-star"
    )
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["start", "step 10", "step 20"]
    assert [a.get_xlabel() for a in axes] == [
        "P(blue-star) = 0.100",
        "P(blue-star) = 0.250",
        "P(blue-star) = 0.900",
    ]
    (outline,) = axes[1].collections  # the region's boundary: 8 unit edges of a 2×2 block
    pts = np.concatenate(outline.get_segments())
    assert len(outline.get_segments()) == 8
    np.testing.assert_allclose([pts.min(), pts.max()], [3.5, 11.5])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["edited region"]
    assert fig._suptitle.get_text() == "edit"
    plt.close(fig)
    bare = plots.frames_figure(frames[:2], ["original", "edited"], "t")  # no IEM, no region
    assert [a.get_xlabel() for a in bare.axes] == ["", ""] and not bare.axes[0].collections
    plt.close(bare)


def test_figures_of_images_refuse_mismatched_labels():
    with pytest.raises(ValueError, match="2 labels for 3 frames"):
        plots.frames_figure(np.zeros((3, 8, 8, 3)), ["a", "b"], "t")
    with pytest.raises(ValueError, match=r"1 row labels for 2 rows of 2"):
        plots.image_grid_figure(np.zeros((3, 8, 8, 3)), 2, ["a"], "t")


def test_an_image_grid_has_a_title_row_labels_and_a_legend_for_its_boxes(tmp_path):
    boxes = np.zeros((4, 2, 2), bool)
    boxes[:, 0, 0] = True
    fig = plots.image_grid_figure(
        np.zeros((4, 8, 8, 3)), 2, ["red-circle", "blue-star"], "top tokens", boxes, "top-5 TIS"
    )
    (ax,) = fig.axes
    assert ax.get_title() == "top tokens"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["red-circle", "blue-star"]
    np.testing.assert_allclose(ax.get_yticks(), [2 + 4, 2 + 10 + 4])  # each row's centre
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["top-5 TIS"]
    path = plots.save_png(fig, tmp_path / "g.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_count_histograms_have_integer_bins_and_say_the_band_is_se(tmp_path, monkeypatch):
    seen = {}
    real = plots._save

    def save(fig, *args):
        seen["fig"] = fig
        return real(fig, *args)

    monkeypatch.setattr(plots, "_save", save)
    plots.count_histograms(
        tmp_path / "h", {"a": np.array([0, 1, 1, 3]), "b": np.array([2, 2])}, "t", "x"
    )
    ax = seen["fig"].axes[0]
    ticks = ax.get_xticks()
    assert np.all(ticks == np.round(ticks))
    centres = sorted({round(p.get_x() + p.get_width() / 2, 6) for p in ax.patches})
    np.testing.assert_allclose(centres[::2], [-0.2, 0.8, 1.8, 2.8])  # a's bars, left of each count
    legend = ax.get_legend()
    assert "1.96 SE" in legend.get_title().get_text()
    assert legend.get_texts()[1].get_text() == "b: mean 2.00 ± 0.00"


def test_the_heat_map_colour_scale_names_its_ends():
    fig = plots.colour_scale_figure("inferno", "lowest", "highest", "TIS")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lowest", "highest"]
    assert ax.images[0].get_cmap().name == "inferno"
    plt.close(fig)


def test_a_png_is_written_at_exactly_the_path_given(tmp_path):
    fig = plots.image_grid_figure(np.zeros((2, 8, 8, 3)), 2, ["a"], "t")
    path = plots.save_png(fig, tmp_path / "edited")  # no suffix: matplotlib would add ".png"
    assert path.read_bytes()[:4] == b"\x89PNG" and sorted(tmp_path.iterdir()) == [path]


def test_shown_images_keep_one_row_per_concept_when_a_concept_has_fewer():
    from cortex_jax.experiments.sample_level import shown_images

    labels = np.array([0] * 6 + [1] * 6 + [2] * 6 + [3] * 6)  # 4 concepts, 6 test images each
    shown, per = shown_images(labels, [3, 0, 1, 2], 8)
    assert per == 6 and len(shown) == 4 * 6  # 4 rows of 6, not 3 rows of 8 under 4 labels
    np.testing.assert_array_equal(labels[shown].reshape(4, 6)[:, 0], [3, 0, 1, 2])
    shown, per = shown_images(labels, [1, 2], 2)
    assert per == 2 and labels[shown].tolist() == [1, 1, 2, 2]


def test_progression_png_shows_at_most_twelve_steps_with_both_ends():
    from cortex_jax.experiments.codebook_level import PNG_FRAMES, png_frames

    assert png_frames(5).tolist() == [0, 1, 2, 3, 4]
    many = png_frames(101)  # --steps 100000 --log-every 1000
    assert len(many) == PNG_FRAMES and many[0] == 0 and many[-1] == 100
    assert (np.diff(many) > 0).all()
