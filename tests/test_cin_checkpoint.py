"""A taming cin_transformer Lightning checkpoint → class-conditional VQGM (no torch needed to
read it; torch writes the test file)."""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cortex_jax.io import sources
from cortex_jax.models import cin

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_dir(tmp_path, fixtures):
    torch = pytest.importorskip("torch", reason="writing a .ckpt needs torch (conformance extra)")
    gpt = dict(np.load(fixtures / "taming_cin_tiny" / "state_dict.npz"))
    vq = dict(np.load(fixtures / "taming_tiny" / "state_dict.npz"))
    sd = {k: torch.from_numpy(v) for k, v in gpt.items()}
    sd |= {f"first_stage_model.{k}": torch.from_numpy(v) for k, v in vq.items()}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "configs").mkdir()
    torch.save({"state_dict": sd, "global_step": 1}, tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "configs" / "2021-project.yaml").write_text(
        "model:\n  params:\n    transformer_config:\n      params:\n        vocab_size: 64\n"
        "        n_layer: 2\n        n_head: 2\n        n_embd: 32\n"
    )
    return tmp_path


def test_cin_checkpoint_loads_both_models(run_dir, fixtures):
    names = [f"class{i}" for i in range(10)]
    vqgm = sources.load_cin_vqgm(run_dir / "checkpoints" / "last.ckpt", names)
    assert vqgm.gpt_config.n_head == 2  # read from configs/*-project.yaml
    assert vqgm.grid_size == 4 and vqgm.vqgan.config.n_embed == 64
    io = dict(np.load(fixtures / "taming_cin_tiny" / "io.npz"))

    greedy = cin.sample(
        vqgm.gpt_config,
        vqgm.gpt_params,
        io["class_ids"],
        jax.random.PRNGKey(0),
        cin.SampleConfig(temperature=0.0),
    )
    np.testing.assert_array_equal(greedy, io["greedy_tokens"])
    px = vqgm.decode(vqgm.sample_tokens([1, 2], jax.random.PRNGKey(0)))
    assert px.shape == (2, 8, 8, 3)  # the f2 tiny VQGAN on a 4×4 grid
    same = sources.load_cin_vqgm(run_dir, names)  # the run folder itself
    np.testing.assert_array_equal(same.vqgan.codebook, vqgm.vqgan.codebook)


def test_cin_checkpoint_errors(run_dir, tmp_path):
    (run_dir / "configs" / "2021-project.yaml").unlink()
    with pytest.raises(ValueError, match="attention heads is not stored"):
        sources.load_cin_vqgm(run_dir / "checkpoints" / "last.ckpt", ["a"] * 10)
    with pytest.raises(FileNotFoundError, match="no checkpoints/last.ckpt in the run folder"):
        sources.load_cin_vqgm(tmp_path / "configs", ["a"] * 10)
    r = subprocess.run(
        [sys.executable, "-m", "train.generate", "--model", "imagenet"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1].startswith("error: --model imagenet needs --checkpoint")
    )
