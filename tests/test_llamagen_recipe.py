"""configs/llamagen.py:runlocal takes the ImageNet recipe's steps with LlamaGen as the generator:
a random tokenizer + GPT generate the splits, the tokenizer is saved and read back by every
later step, and LlamaGen's own re-sampling of the region is the recipe's Table 5 editing row.
(The later steps do not depend on the family; tests/test_recipe.py runs them through the CLI,
and tests/test_llamagen_e2e.py runs them on LlamaGen's fixture.)"""

import functools
import json

import jax
import pytest

from configs import llamagen as llamagen_config
from cortex_jax.experiments import families, recipe
from cortex_jax.io import shards, sources
from tests.helpers import cli

_run = functools.partial(cli.run, check=True)


def test_config_reads_llamagen_files_and_sampling():
    c = llamagen_config.get_config(None)
    assert (c.family, c.checkpoint, c.vq_checkpoint) == (
        "llamagen",
        "checkpoints/llamagen/c2i_L_256.pt",
        "checkpoints/llamagen/vq_ds16_c2i.pt",
    )
    s = recipe.sampling(c)
    assert (s.cfg_scale, s.top_k, s.temperature, s.cfg_interval) == (4.0, 2000, 1.0, -1)
    c.workdir = "/data/lg"
    assert c.vqgan == "/data/lg/models/vqgan" and c.data.test == "/data/lg/tokens/test"
    r = llamagen_config.get_config("runlocal,iem=te")
    assert r.checkpoint == "random" and r.arch == "te" and r.family == "llamagen"
    c.checkpoint = "/nowhere/c2i.pt"
    with pytest.raises(FileNotFoundError):
        recipe.load_vqgm(c)


@pytest.mark.slow
def test_runlocal_takes_the_recipe_steps(tmp_path):
    w = tmp_path / "run"
    cfg = lambda extra="": [  # noqa: E731
        f"--config=configs/llamagen.py:runlocal{extra}",
        f"--config.workdir={w}",
        "--config.generate.classes=10,11,19,20",
        "--config.generate.train=6",
        "--config.generate.val=2",
        "--config.generate.test=2",
        "--config.codebook.images_per_pair=1",
        "--config.codebook.steps=4",
    ]
    _run("train.generate", *cfg())
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        ds = shards.TokenDataset.open(w / "tokens" / split)
        tokens, labels, _ = ds.arrays()
        assert tokens.shape == (n, 16, 16) and tokens.max() < 64
        assert sorted(set(labels.tolist())) == [10, 11, 19, 20]
        assert ds.meta["vqgm"] == "llamagen-random"
        assert ds.meta["sampling"]["cfg_scale"] == 2.0 and ds.meta["sampling"]["top_k"] == 20
    saved = json.loads((w / "models" / "vqgan" / "config.json").read_text())
    assert saved["family"] == "llamagen" and saved["codebook_size"] == 64

    # The later steps are the family-independent ones tests/test_recipe.py runs through the CLI;
    # here, what they read of this family: the saved tokenizer, and the Table 5 editing row.
    c = llamagen_config.get_config("runlocal")
    c.workdir = str(w)
    vq = sources.load_vqgan(c.vqgan)  # recipe.models() reads it so
    assert vq.grid_size == 16 and len(vq.codebook) == 64
    fam = recipe.family(c)
    assert fam.edit_row == "llamagen_resample" and c.codebook.family_edit
    editor = families.region_editor(recipe.load_vqgm(c), jax.random.PRNGKey(0))
    assert editor is not None
