"""LlamaGen end to end through the public API on shared/fixtures/llamagen_tiny (LlamaGen's own
tiny weights): the registry loads it, token datasets are generated for three classes, an IEM
trains on them, then the sample level, Table 5 with LlamaGen's own re-sampling of the region as
an editing row (as MaskGIT's re-mask is), a bias audit between two classes, the attribution
comparison and the atlas of all of it run on it."""

import json

import jax
import numpy as np
import pytest

import cortex_jax as cx
from cortex_jax.experiments import compare, families
from cortex_jax.experiments.generate import generate_dataset
from cortex_jax.figures import atlas


@pytest.mark.slow
def test_llamagen_end_to_end_on_the_fixture(fixtures, tmp_path):
    fx = fixtures / "llamagen_tiny"
    fam = families.get("llamagen")
    args = families.LoadArgs(
        str(fx / "gpt_tiny.pt"), str(fx / "vq_tiny.pt"), str(fx / "config.json")
    )
    model = fam.load(args)
    sc = fam.settings({"top_k": 16, "cfg_scale": 2.0})
    classes = [0, 3, 6]
    train = generate_dataset(model, classes, 24, tmp_path / "train", 0, sc, 36)
    val = generate_dataset(model, classes, 8, tmp_path / "val", 1, sc, 36)
    tokens, labels, _ = train.arrays()
    assert tokens.shape == (72, 8, 8) and sorted(set(labels.tolist())) == classes
    assert train.meta["vqgm"] == "llamagen" and train.meta["sampling"]["cfg_scale"] == 2.0

    n = len(model.class_names)
    iem_cfg = cx.IEMConfig("ce", n, width=16, depth=1, hidden=32)
    train_cfg = cx.TrainConfig(batch_size=24, epochs=3, decay_every=100)
    predict, best = cx.train_iem(model, train, val, tmp_path / "iem", iem_cfg, train_cfg)
    assert np.isfinite(best["val_loss"])

    codebook = np.asarray(model.codebook)

    def classifier(px):  # a pixel "judge": the IEM on the re-encoded image
        return jax.nn.softmax(predict(codebook[model.encode(px)]), -1)

    models = fam.bundle(model, sc, predict, classifier)
    assert models.name == "llamagen" and models.grid_size == 8

    study_cfg = cx.StudyConfig(
        cx.SampleLevelConfig(n=3, k=5, n_samples=2, curve_ns=(1, 3)),
        per_concept=6,
        test_per_concept=3,
        shown_per_concept=2,
    )
    rep = cx.sample_study(models, classes, study_cfg, tmp_path / "sample")
    assert set(rep.concepts) == set(classes)
    assert (tmp_path / "sample" / "top_tokens.png").is_file()

    editor = families.region_editor(model, jax.random.PRNGKey(7), sc)
    assert editor is not None and fam.edit_row == "llamagen_resample"
    t5_cfg = cx.Table5Config(cx.SelectionConfig(steps=4, log_every=2), images_per_pair=2)
    t5 = cx.table5(
        models, [(0, 3), (3, 0)], t5_cfg, tmp_path / "t5", editors={fam.edit_row: editor}
    )
    row = t5["table"]["llamagen_resample/final"]  # editor rows are scored at their end
    assert 0 < row["tokens_changed"] <= t5["region_tokens"]
    assert "token_selection/final" in t5["table"]
    assert "llamagen_resample" in (tmp_path / "t5" / "table5.md").read_text()

    a, b = model.class_names[0], model.class_names[3]
    audit_cfg = cx.AuditConfig(
        per_concept=16, neutral=8, ns=(3,), k=5, n_samples=2, n_boot=50, epochs=2, batch_size=8
    )
    audit = cx.audit(models, a, b, "mix", audit_cfg, tmp_path / "audit", mix=0.5)
    assert audit["true_share_a"] == 0.5 and len(audit["per_n"]) == 1
    saved = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert saved["per_n"][0]["n"] == 3

    # The attribution comparison: LlamaGen has no infill, so the generator removal is refused
    # as not applicable (named), the baseline-token curves and the classifier's patch run.
    vt, vl, _ = val.arrays()
    cmp_cfg = compare.CompareConfig(
        methods=("gradient", "random", "frequency"), steps=4, permutation_epochs=0, n_boot=20
    )
    result = compare.run(models, cmp_cfg, tmp_path / "compare", (vt[::4], vl[::4], None))
    grad = result["methods"]["gradient"]
    assert np.isfinite(grad["deletion_auc_iem_baseline"]["value"])
    assert "deletion_auc_iem_generator" not in grad
    assert any("generator" in why for why in result["settings"]["not_applicable"].values())

    site = atlas.build_atlas(
        tmp_path / "atlas",
        tmp_path / "sample",
        model.decode,
        table5_dir=tmp_path / "t5",
        bias_dirs=[tmp_path / "audit"],
        compare_dir=tmp_path / "compare",
        n_show=2,
        n_portraits=2,
    )
    assert site["concepts"] == 3 and (tmp_path / "atlas" / "methods.html").is_file()
    index = (tmp_path / "atlas" / "index.html").read_text()
    assert "methods.html" in index and "llamagen_resample" in index
