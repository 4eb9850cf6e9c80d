"""The family registry (cortex_jax.experiments.families) and the ClassConditional interface: a
family registered in this test alone generates through `train.generate` end to end, so adding a
family is one registration; unknown names, duplicate names and foreign sampler flags are refused
in one line."""

import json
import re

import jax
import numpy as np
import pytest

from cortex_jax import toy
from cortex_jax.experiments import families
from cortex_jax.io import shards
from cortex_jax.models import cin
from cortex_jax.models.vqgan import VQGAN, VQGANConfig
from cortex_jax.models.vqgan import init_params as vqgan_init
from cortex_jax.models.vqgm import ClassConditional, ClassConditionalVQGM, Encodes, ResamplesRegion


def _tiny_vqgm(args: families.LoadArgs) -> ClassConditionalVQGM:
    """A 3-class cin VQGM with random weights, 16 px, 8×8 tokens, K = 16."""
    vcfg = VQGANConfig(
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        z_channels=32,
        embed_dim=4,
        n_embed=16,
        resolution=16,
    )
    vq = VQGAN(vcfg, vqgan_init(vcfg, jax.random.PRNGKey(0)))
    gcfg = cin.GPTConfig(
        vocab_size=19,
        block_size=64,
        n_layer=1,
        n_head=2,
        n_embd=16,
        image_vocab_size=16,
        class_offset=16,
        n_classes=3,
    )
    params = cin.init_params(gcfg, jax.random.PRNGKey(1))
    return ClassConditionalVQGM("tiny-test", vq, gcfg, params, ("ant", "bee", "cat"))


@pytest.fixture
def tiny_family():
    fam = families.register(
        families.Family("tiny-test", _tiny_vqgm, cin.SampleConfig(temperature=1.0, top_k=5))
    )
    yield fam
    families.unregister("tiny-test")


@pytest.mark.slow  # 30–140 s on 2 shared cores: cin sampling and the VQGAN compile
def test_one_registration_generates_through_train_generate(tiny_family, tmp_path, entry_point):
    from absl import flags

    generate = entry_point("train.generate")

    out = tmp_path / "ds"
    argv = ["train.generate", "--model", "tiny-test", "--classes", "ant,cat", "--per-class", "3"]
    flags.FLAGS(argv + ["--temperature", "0.7", "--out", str(out)])
    generate.main([])
    ds = shards.TokenDataset.open(out)
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["vqgm"], meta["grid_size"], meta["codebook_size"]) == ("tiny-test", 8, 16)
    assert meta["sampling"] == {"temperature": 0.7, "top_k": 5, "top_p": 1.0}  # flag + default
    tokens, labels, _ = ds.arrays()
    assert labels.tolist() == [0, 0, 0, 2, 2, 2]
    model = _tiny_vqgm(families.LoadArgs())
    key = jax.random.fold_in(jax.random.PRNGKey(0), 0)  # shard 0 of seed 0
    sc = cin.SampleConfig(temperature=0.7, top_k=5)
    np.testing.assert_array_equal(tokens, model.sample_tokens(labels, key, sc))


def test_registry_refuses_unknown_duplicate_and_foreign_settings(tiny_family):
    assert {"toy", "imagenet", "maskgit", "llamagen", "dallebart", "tiny-test"} <= set(
        families.names()
    )
    with pytest.raises(ValueError, match="unknown model 'nope'; expected one of .*llamagen"):
        families.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        families.register(tiny_family)
    with pytest.raises(ValueError, match="cfg_scale do not apply to --model tiny-test"):
        tiny_family.settings({"cfg_scale": 2.0})
    assert tiny_family.settings({"cfg_scale": 2.0, "top_k": 3}, strict=False).top_k == 3
    assert families.LLAMAGEN.settings({"top_k": 16}).cfg_scale == 4.0
    with pytest.raises(ValueError, match="needs --checkpoint GPT.pt and --vq-checkpoint"):
        families.LLAMAGEN.load(families.LoadArgs(checkpoint="c2i.pt"))


def test_toy_and_cin_satisfy_the_interface(tmp_path):
    vqgm = toy.load_toy_vqgm()
    assert isinstance(vqgm, ClassConditional) and isinstance(vqgm, Encodes)
    assert not isinstance(vqgm, ResamplesRegion)  # optional: the cin prior has no region edit
    assert families.region_editor(vqgm, jax.random.PRNGKey(0)) is None
    assert families.get("toy") is toy.FAMILY
    assert np.asarray(vqgm.codebook).shape == (512, 32)
    folder = families.get(str(toy.WEIGHTS_DIR))  # a folder of the toy layout, by path
    assert folder.name == "toy" and folder.load(families.LoadArgs()).grid_size == 8


@pytest.mark.slow
def test_toy_encode_decode_through_the_interface():
    vqgm = toy.load_toy_vqgm()
    grids = vqgm.sample_tokens([0, 3], jax.random.PRNGKey(0), toy.TOY_SAMPLING)
    np.testing.assert_array_equal(vqgm.encode(vqgm.decode(grids)).shape, (2, 8, 8))


class _Repaints:
    """The toy VQGM with a region re-sampling of its own: masked positions become the target
    class id (a stand-in that shows which grid, mask and targets the editor passed)."""

    def __init__(self, vqgm):
        self.inner = vqgm

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def resample_region(self, tokens, mask, class_ids, key, sample_config=None):
        assert sample_config.top_k == 7  # the family's settings with the request's override
        t = np.asarray(class_ids)[:, None, None]
        return np.where(np.broadcast_to(mask, np.shape(tokens)), t, tokens)


def test_a_registered_family_becomes_a_table5_editor_with_no_command_change(tmp_path):
    from cortex_jax.experiments import codebook_level

    fam = families.register(
        families.Family(
            "edit-test",
            lambda a: _Repaints(toy.load_toy_vqgm()),
            cin.SampleConfig(top_k=5),
            edit_row="edit_test_row",
            edit_note="paints the region (top-k {top_k})",
        )
    )
    try:
        cb = toy.load_toy_vqgm().codebook
        row, editor, note = families.family_editor(
            "edit-test", families.LoadArgs(), cb, jax.random.PRNGKey(0), {"top_k": 7}
        )
        assert (row, note) == ("edit_test_row", "edit_test_row: paints the region (top-k 7).")
        base, mask = np.full((2, 8, 8), 9), np.zeros((8, 8), bool)
        mask[3:5, 3:5] = True
        out = editor(base, np.array([0, 1]), np.array([4, 6]), mask)
        assert (out[:, 3:5, 3:5] == np.array([4, 6])[:, None, None]).all()
        assert (out[:, ~mask] == 9).all()
        with pytest.raises(ValueError, match="tokenizer is not the --vqgan the IEM reads"):
            families.family_editor("edit-test", families.LoadArgs(), cb[:-1], jax.random.PRNGKey(0))
        assert fam.describe_edit(fam.sampling).endswith("(top-k 5).")
    finally:
        families.unregister("edit-test")
    maskgit_note = families.MASKGIT.describe_edit(families.MASKGIT.settings({"num_iter": 8}))
    assert "(8 iterations from the 3rd)" in maskgit_note
    # explain.codebook's request names a family without an editor, or a foreign setting: one
    # line before any model loads or any folder is made
    req = codebook_level.Request(table5=True, edit_family="imagenet")
    with pytest.raises(ValueError, match="'imagenet' has no region re-sampling.*llamagen, maskgit"):
        codebook_level.check_request(req, tmp_path / "o", "explain.codebook")
    req = codebook_level.Request(table5=True, edit_family="llamagen", edit_settings={"num_iter": 3})
    with pytest.raises(ValueError, match="num_iter do not apply to --model llamagen"):
        codebook_level.check_request(req, tmp_path / "o", "explain.codebook")
    assert not (tmp_path / "o").exists()


def test_explain_atlas_model_flag_goes_through_the_registry(tiny_family, tmp_path, entry_point):
    """explain.atlas --model: a registered family is accepted (the run goes on to its inputs);
    an unknown name, or a second decoder named beside it, is one line before any is read."""
    from absl import flags

    atlas = entry_point("explain.atlas")
    out = tmp_path / "site"
    for extra, needle in (
        (["--model", "nope"], "unknown model 'nope'; expected one of"),
        (["--model", "tiny-test", "--vqgan", "toy"], "both name the decoder"),
        (["--model", "tiny-test"], f"no explain.sample report in {tmp_path / 'none'}"),
    ):
        flags.FLAGS.unparse_flags()
        sample = ["--sample", str(tmp_path / "none")]
        flags.FLAGS(["explain.atlas", *sample, "--out", str(out), *extra])
        with pytest.raises(SystemExit) as e:
            atlas.main([])
        assert str(e.value).startswith("error: ") and needle in str(e.value), e.value
    assert not out.exists()


def test_the_five_families_come_through_one_registry_in_two_kinds(tmp_path):
    """toy, imagenet, maskgit, llamagen are class-conditional, dallebart prompt-conditioned; a
    class-only consumer given dallebart (or explain.bias's dallebart given a class family) is
    one line naming what it takes, before any file is read."""
    from ml_collections import ConfigDict

    from cortex_jax.experiments import codebook_level, recipe

    five = ("toy", "imagenet", "maskgit", "llamagen", "dallebart")
    assert {n: families.get(n).conditioning for n in five} == {
        "dallebart": "prompt",
        "imagenet": "class",
        "llamagen": "class",
        "maskgit": "class",
        "toy": "class",
    }
    expected = "takes a class-conditional family (imagenet, llamagen, maskgit, toy); 'dallebart'"
    with pytest.raises(ValueError, match=r"explain.compare --model " + re.escape(expected)):
        families.get("dallebart", "class", "explain.compare --model")
    with pytest.raises(ValueError, match=r"the recipe's config.family " + re.escape(expected)):
        recipe.family(ConfigDict({"family": "dallebart"}))
    with pytest.raises(ValueError, match="--edit-model takes a class-conditional family"):
        codebook_level.check_request(
            codebook_level.Request(table5=True, edit_family="dallebart"), tmp_path / "o", "x"
        )
    with pytest.raises(ValueError, match="--classes takes a class-conditional family"):
        families.class_ids(families.DALLEBART, None, "all")
    with pytest.raises(ValueError, match=r"takes a prompt-conditioned .*family \(dallebart\)"):
        families.get("maskgit", "prompt", "explain.bias --dalle")
    assert families.get("dallebart", "prompt") is families.DALLEBART
    with pytest.raises(ValueError, match="needs --checkpoint .* and --tokenizer DIR"):
        families.DALLEBART.load(families.LoadArgs(checkpoint="dalle-mini/dalle-mini"))
    assert not (tmp_path / "o").exists()


def test_train_generate_refuses_the_other_kinds_flag(tmp_path, entry_point):
    """--prompts with a class family, --classes with dallebart and dallebart without prompts:
    one line each, nothing loaded or written."""
    from absl import flags

    generate = entry_point("train.generate")
    out = tmp_path / "ds"
    for extra, needle in (
        (["--prompts", "a|b"], "--prompts with --model toy, a class-conditional family"),
        (
            ["--model", "dallebart", "--classes", "all", "--prompts", "a|b"],
            "--classes with --model dallebart, a prompt-conditioned family; it takes --prompts",
        ),
        (["--model", "dallebart"], "--model dallebart needs --prompts with distinct prompts"),
        (["--model", "dallebart", "--prompts", "a|a"], "needs --prompts with distinct prompts"),
        (["--model", "dallebart", "--prompts", "a|b", "--num-iter", "3"], "num_iter do not"),
    ):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train.generate", "--out", str(out), *extra])
        with pytest.raises(SystemExit) as e:
            generate.main([])
        assert str(e.value).startswith("error: ") and needle in str(e.value), e.value
    assert not out.exists()
