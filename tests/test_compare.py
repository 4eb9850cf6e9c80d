"""python -m explain.compare: the one table of attribution methods, on the toy world."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cortex_jax.core import trees
from cortex_jax.experiments import compare
from tests.helpers import cli

TINY = (
    "--per-concept", "2", "--train-per-concept", "2", "--permutation-epochs", "1",
    "--steps", "4", "--n-samples", "2", "--ig-steps", "2", "--n-boot", "200",
)  # fmt: skip


@pytest.mark.slow
def test_compare_writes_the_table_and_real_methods_beat_random(tmp_path):
    out = tmp_path / "cmp"
    methods = "gradient,occlusion,random,frequency"
    # without --cascade: one randomisation stage, every layer at once (the last of the cascade);
    # --cascade's thirteen stages cost a compile each per method (the tiny-family test below runs
    # them with the model-free method)
    cli.run("explain.compare", "--methods", methods, "--out", str(out), *TINY, check=True)
    result = json.loads((out / "compare.json").read_text())
    assert set(result) == {"settings", "methods"}
    assert set(result["methods"]) == {"gradient", "occlusion", "random", "frequency"}
    expected = compare.metric_names(("baseline", "generator"), classifier=True) + [
        "gt_precision",
        "pointing_game",
        "randomization_spearman",
        "label_permutation_spearman",
    ]
    for name, row in result["methods"].items():
        for metric in expected:
            v = row[metric]
            assert set(v) == {"value", "ci"} and len(v["ci"]) == 2, (name, metric)
            if metric.endswith("_spearman") and np.isnan(v["value"]):
                assert np.isnan(v["ci"]).all()  # undefined: a randomised model's scores are flat
                continue
            assert v["ci"][0] <= v["value"] <= v["ci"][1], (name, metric, v)
    rand = result["methods"]["random"]
    for m in ("gradient", "occlusion"):
        row = result["methods"][m]
        # a behaviour, not a schema: real methods delete the concept faster than random order,
        # with the interval clear of random's mean
        assert (
            row["deletion_auc_iem_baseline"]["ci"][1] < rand["deletion_auc_iem_baseline"]["value"]
        )
        assert row["gt_precision"]["value"] > rand["gt_precision"]["value"]
    # the model-free reference fails both randomisation checks, by construction
    assert rand["randomization_spearman"]["value"] == pytest.approx(1)
    assert rand["label_permutation_spearman"]["value"] == pytest.approx(1)
    assert (out / "compare.md").read_text().startswith("# Attribution methods compared")
    for ext in ("png", "svg", "csv"):
        assert (out / "curves" / f"deletion_iem_baseline.{ext}").is_file()
    cascade = json.loads((out / "cascade.json").read_text())
    assert [r["layer"] for r in cascade["gradient"]] == ["conv0_0"]  # all layers, to the first
    stages = json.loads((out / "timings.json").read_text())  # what bench/compare.py prints
    assert {"loading the models", "occlusion: scores", "writing the table and curves"} <= set(
        stages
    ) and all(v >= 0 for v in stages.values())


def test_compare_unknown_method_is_one_line(tmp_path):
    r = cli.run("explain.compare", "--methods", "nope", "--out", str(tmp_path / "x"), *TINY)
    cli.one_line_error(r, "method='nope'")


def test_markdown_table_has_a_row_per_metric():
    res = {"methods": {"a": {"m1": {"value": 0.5, "ci": [0.4, 0.6]}}, "b": {}}}
    md = compare.markdown(res)
    assert "| m1 | 0.500 [0.400, 0.600] |  |" in md
    assert compare.baseline_token(np.array([[0.0, 0.0], [1.0, 1.0], [0.4, 0.6]])) == 2


class _NoInfill:
    """A VQGM whose prior gives no infill (as MaskGIT's and LlamaGen's do not)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        if name == "infill_tokens":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _tiny_family_model(args):
    """3 classes, random weights, 16 px, 8×8 tokens, K = 16, d = 4; no infill."""
    import jax

    from cortex_jax.models import cin
    from cortex_jax.models.vqgan import VQGAN, VQGANConfig
    from cortex_jax.models.vqgan import init_params as vqgan_init
    from cortex_jax.models.vqgm import ClassConditionalVQGM

    vcfg = VQGANConfig(
        ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=32,
        embed_dim=4, n_embed=16, resolution=16,
    )  # fmt: skip
    gcfg = cin.GPTConfig(
        vocab_size=19, block_size=64, n_layer=1, n_head=2, n_embd=16, image_vocab_size=16,
        class_offset=16, n_classes=3,
    )  # fmt: skip
    vq = VQGAN(vcfg, trees.random_init(lambda: vqgan_init(vcfg, jax.random.PRNGKey(0))))
    params = trees.random_init(lambda: cin.init_params(gcfg, jax.random.PRNGKey(1)), 1)
    return _NoInfill(ClassConditionalVQGM("tiny-cmp", vq, gcfg, params, ("ant", "bee", "cat")))


def test_compare_runs_on_a_registered_family_without_ground_truth(tmp_path, entry_point):
    """--model through the registry on a dataset of grids without masks: the gt metrics keep
    compare.json's schema as NaN with the reason in settings and compare.md, and the generator
    removal is off (said so) because this family's prior has no infill. --cascade writes every
    randomisation stage, top layer first (with the model-free method, no stage compiles)."""
    import jax
    from absl import flags

    from cortex_jax.experiments import families
    from cortex_jax.io import folders, shards
    from cortex_jax.models import cin, iem

    families.register(families.Family("tiny-cmp", _tiny_family_model, cin.SampleConfig()))
    try:
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(3), 3)
        tokens = rng.integers(0, 16, (9, 8, 8))
        shards.write_arrays(tmp_path / "ds", tokens, labels, ["ant", "bee", "cat"], 16, "tiny-cmp")
        icfg = iem.IEMConfig("ce", 3, width=8, depth=1, hidden=16)
        variables = trees.random_init(lambda: iem.init_variables(icfg, jax.random.PRNGKey(0), 8, 4))
        folders.write_iem_folder(tmp_path / "iem", icfg, variables, ["ant", "bee", "cat"], "x")
        cmd = entry_point("explain.compare")
        out = tmp_path / "cmp"
        flags.FLAGS(
            ["explain.compare", "--model", "tiny-cmp", "--dataset", str(tmp_path / "ds"),
             "--iem-checkpoint", str(tmp_path / "iem"), "--methods", "frequency",
             "--per-concept", "2", "--train-per-concept", "0", "--steps", "2",
             "--n-boot", "20", "--cascade", "--out", str(out)]
        )  # fmt: skip
        cmd.main([])
    finally:
        families.unregister("tiny-cmp")
    result = json.loads((out / "compare.json").read_text())
    settings = result["settings"]
    assert (settings["vqgm"], settings["images"]) == ("tiny-cmp", 6)  # 2 of each class
    assert settings["removals"] == ["baseline"]
    why = settings["not_applicable"]
    assert set(why) == {"gt_precision", "pointing_game", "gt_mass", "generator removal"}
    assert "infill" in why["generator removal"] and "masks" in why["gt_precision"]
    for row in result["methods"].values():
        assert np.isnan(row["gt_precision"]["value"]) and np.isnan(row["pointing_game"]["ci"]).all()
        assert not any("generator" in k for k in row)
        auc = row["deletion_auc_iem_baseline"]
        assert auc["ci"][0] <= auc["value"] <= auc["ci"][1]
        assert "randomization_spearman" in row
    # --cascade: every randomisation stage, top layer first, down to all of them at once
    layers = [r["layer"] for r in json.loads((out / "cascade.json").read_text())["frequency"]]
    assert layers[0] == "out" and len(layers) > 2 and len(set(layers)) == len(layers), layers
    md = (out / "compare.md").read_text()
    assert "| gt_precision | n/a |" in md and "- generator removal: " in md


def test_compare_refuses_an_unknown_or_dataless_family_before_writing(tmp_path, entry_point):
    from absl import flags

    cmd = entry_point("explain.compare")
    out = tmp_path / "x"
    for extra, needle in (
        (["--model", "nope"], "unknown model 'nope'; expected one of"),
        (["--model", "llamagen"], "--model llamagen needs --dataset DIR"),
    ):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["explain.compare", "--out", str(out), *extra])
        with pytest.raises(SystemExit) as e:
            cmd.main([])
        assert str(e.value).startswith("error: ") and needle in str(e.value), e.value
    assert not out.exists()


def test_stage_clock_adds_the_time_since_the_last_mark_per_stage(monkeypatch):
    now = iter([10.0, 11.0, 13.5, 14.0])
    monkeypatch.setattr(compare.time, "perf_counter", lambda: next(now))
    clock = compare.StageClock()
    clock("a")
    clock("b")
    clock("a")
    assert clock.seconds == {"a": 1.5, "b": 2.5}
