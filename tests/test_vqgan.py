"""VQGAN model and checkpoint formats against the fixtures made with vqgan-jax and taming."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.core.trees import flatten_paths
from cortex_jax.io import folders, torch_pickle
from cortex_jax.io.convert import convert_taming_state_dict, infer_taming_config
from cortex_jax.io.folders import hub_cli, save_vqgan
from cortex_jax.io.sources import load_vqgan
from cortex_jax.io.torch_pickle import read_state_dict
from cortex_jax.models.vqgan import (
    PRESETS,
    VQGAN,
    VQGANConfig,
    count_params,
    init_params,
    param_shapes,
)
from tests.helpers import cli

LATENT_ATOL = 1e-5
PIXEL_ATOL = 5e-5


@pytest.fixture(scope="module")
def jax_tiny(fixtures):
    return fixtures / "vqgan_jax_tiny"


@pytest.fixture(scope="module")
def jax_io(jax_tiny):
    return dict(np.load(jax_tiny / "io.npz"))


@pytest.fixture(scope="module")
def jax_model(jax_tiny):
    return load_vqgan(jax_tiny)


def _nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


def test_vqgan_jax_fixture_reproduced(jax_model, jax_io):
    v, io = jax_model, jax_io
    np.testing.assert_allclose(v.encode_latents(io["pixels"]), io["z_e"], atol=LATENT_ATOL, rtol=0)
    idx = v.encode(io["pixels"])
    assert idx.shape == (2, 256) and idx.dtype == jnp.int32
    np.testing.assert_array_equal(idx, io["encode_indices"])
    e = v.embed(idx)
    np.testing.assert_array_equal(e, io["z_q"])  # exact codebook rows
    np.testing.assert_allclose(v.decode(e), io["reconstruction"], atol=PIXEL_ATOL, rtol=0)
    np.testing.assert_allclose(v.decode_code(io["codes"]), io["decoded"], atol=PIXEL_ATOL, rtol=0)
    assert v.codebook.shape == (64, 32)


def test_embed_accepts_grid_shaped_indices(jax_model, jax_io):
    codes = jax_io["codes"]
    np.testing.assert_array_equal(jax_model.embed(codes.reshape(2, 16, 16)), jax_model.embed(codes))


def test_taming_fixture_reproduced(fixtures):
    d = fixtures / "taming_tiny"
    io = dict(np.load(d / "io.npz"))
    cfg = json.loads((d / "config.json").read_text())
    v = load_vqgan(d / "state_dict.npz")
    want = VQGANConfig(**cfg["ddconfig"], n_embed=cfg["n_embed"], embed_dim=cfg["embed_dim"])
    # The resolution is not stored; attention is inferred at the same level (the lowest).
    params = convert_taming_state_dict(read_state_dict(d / "state_dict.npz"))
    assert infer_taming_config(params, resolution=32) == want
    assert v.config.attn_resolutions == (v.config.resolution // 2,)
    pixels = _nhwc(io["pixels"])
    np.testing.assert_allclose(v.encode_latents(pixels), _nhwc(io["z_e"]), atol=LATENT_ATOL, rtol=0)
    idx = v.encode(pixels)
    np.testing.assert_array_equal(idx, io["encode_indices"])
    np.testing.assert_array_equal(v.embed(idx), _nhwc(io["z_q"]))
    np.testing.assert_allclose(
        v.decode_code(idx), _nhwc(io["reconstruction"]), atol=PIXEL_ATOL, rtol=0
    )
    np.testing.assert_allclose(
        v.decode_code(io["codes"]), _nhwc(io["decoded"]), atol=PIXEL_ATOL, rtol=0
    )


def test_taming_conversion_matches_vqgan_jax_layout(fixtures):
    sd = read_state_dict(fixtures / "taming_tiny" / "state_dict.npz")
    sd["loss.discriminator.main.0.weight"] = np.zeros((4, 3, 3, 3), np.float32)  # dropped
    converted = flatten_paths(convert_taming_state_dict(sd))
    listed = {
        line.split("\t")[0]: eval(line.split("\t")[1])  # noqa: S307 - shape tuples from the fixture
        for line in (fixtures / "vqgan_jax_tiny" / "params.txt").read_text().splitlines()
    }
    assert {k: v.shape for k, v in converted.items()} == listed
    # conv kernels are transposed (out, in, kh, kw) → (kh, kw, in, out)
    np.testing.assert_array_equal(
        converted["encoder/conv_in/kernel"], sd["encoder.conv_in.weight"].transpose(2, 3, 1, 0)
    )


def test_imagenet_preset_size():
    shapes = param_shapes(PRESETS["imagenet_f16_16384"])
    assert count_params(shapes) == (76_073_859, 343)
    flat = flatten_paths(shapes)
    assert flat["quantize/embedding/embedding"].shape == (16384, 256)
    assert PRESETS["imagenet_f16_16384"].grid_size == 16


def test_save_load_roundtrip_bit_identical(jax_model, tmp_path, jax_io):
    out = save_vqgan(jax_model, tmp_path / "copy")
    again = load_vqgan(out)
    assert again.config == jax_model.config
    a, b = flatten_paths(jax_model.params), flatten_paths(again.params)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    np.testing.assert_array_equal(again.encode(jax_io["pixels"]), jax_io["encode_indices"])
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "flax_model.msgpack"]


def test_bfloat16_option_keeps_tokens(jax_tiny, jax_io):
    v = load_vqgan(jax_tiny, dtype=jnp.bfloat16)
    out = v.decode_code(jax_io["codes"])
    assert out.dtype == jnp.bfloat16
    assert jax.tree_util.tree_leaves(v.params)[0].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out, np.float32), jax_io["decoded"], atol=0.15)


# --- bad input ------------------------------------------------------------------------------


def test_wrong_checkpoint_shape_names_parameter(jax_tiny, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(jax_tiny, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["n_embed"] = 128
    (folder / "config.json").write_text(json.dumps(cfg))
    msg = r"quantize/embedding/embedding has shape \(64, 32\) but the config expects \(128, 32\)"
    with pytest.raises(ValueError, match=msg):
        load_vqgan(folder)


def test_missing_parameter_named(fixtures):
    sd = read_state_dict(fixtures / "taming_tiny" / "state_dict.npz")
    params = convert_taming_state_dict(sd)
    del params["decoder"]["conv_out"]
    with pytest.raises(ValueError, match="lacks parameter decoder/conv_out/bias"):
        folders.check_params(params, infer_taming_config(convert_taming_state_dict(sd), 32))


def test_missing_files_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "flax_model.msgpack"))):
        load_vqgan(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.ckpt"))):
        load_vqgan(tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match="'no_such_thing' not found"):
        load_vqgan("no_such_thing")


def test_indices_out_of_range_refused(jax_model):
    codes = np.zeros((2, 256), np.int32)
    codes[1, 17] = 64
    with pytest.raises(ValueError, match=r"token id 64 at index \(1, 17\) is outside .*\[0, 64\)"):
        jax_model.decode_code(codes)
    codes[1, 17] = -3
    with pytest.raises(ValueError, match="token id -3"):
        jax_model.embed(codes)
    with pytest.raises(ValueError, match=r"shape \(2, 255\)"):
        jax_model.embed(np.zeros((2, 255), np.int32))
    with pytest.raises(ValueError, match="dtype float32"):
        jax_model.embed(np.zeros((2, 256), np.float32))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((32, 32, 3), r"rank 3"),
        ((1, 32, 32, 4), r"4 channels"),
        ((1, 31, 32, 3), r"31x32 is not a multiple of the downsampling factor 2"),
    ],
)
def test_bad_pixels_refused(jax_model, shape, message):
    with pytest.raises(ValueError, match=message):
        jax_model.encode(np.zeros(shape, np.float32))


def test_bad_embedding_refused(jax_model):
    with pytest.raises(ValueError, match=r"E has shape \(1, 16, 16, 8\); expected"):
        jax_model.decode(np.zeros((1, 16, 16, 8), np.float32))


def test_unknown_config_key_refused(jax_tiny, tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(jax_tiny, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["ch_mul"] = [1, 2]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"unknown VQGAN config keys \['ch_mul'\]"):
        load_vqgan(folder)


# --- Hugging Face hub -----------------------------------------------------------------------


def _fake_hub_cache(root, repo_id, files):
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in files:
        shutil.copy(f, snap / f.name)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_hub_repo_id_cache_hit_offline(offline_hub, jax_tiny, jax_io):
    repo = "dalle-mini/vqgan_imagenet_f16_16384"
    _fake_hub_cache(offline_hub, repo, [jax_tiny / "config.json", jax_tiny / "flax_model.msgpack"])
    v = load_vqgan(repo)
    np.testing.assert_array_equal(v.encode(jax_io["pixels"]), jax_io["encode_indices"])
    v2 = load_vqgan("imagenet_f16_16384")  # the preset resolves to the same repo
    assert v2.config == v.config


def test_hub_cache_miss_offline_explains(offline_hub):
    with pytest.raises(FileNotFoundError) as err:
        load_vqgan("dalle-mini/vqgan_imagenet_f16_16384")
    msg = str(err.value)
    assert "dalle-mini/vqgan_imagenet_f16_16384" in msg
    assert str(offline_hub) in msg
    assert f"`{hub_cli()} dalle-mini/" in msg and "\n" not in msg


def test_an_unreachable_hub_fails_after_a_short_probe_not_the_clients_retries(
    offline_hub, monkeypatch
):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.time()
    with pytest.raises(FileNotFoundError, match="http://127.0.0.1:9 is not reachable"):
        load_vqgan("dalle-mini/vqgan_imagenet_f16_16384")
    assert time.time() - t0 < 5


def test_the_download_command_named_is_the_one_installed():
    cmd = hub_cli().split()[0]
    assert shutil.which(cmd) or (Path(sys.executable).parent / cmd).exists(), cmd


def test_an_uncached_repo_id_offline_fails_in_one_line_at_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(cli.REPO), "HF_HUB_OFFLINE": "1"}
    env["HF_HUB_CACHE"] = str(tmp_path / "hub")
    code = (
        "import time, sys; t0 = time.time(); from cortex_jax.io.sources import load_vqgan\n"
        "from cortex_jax.core import errors\n"
        "with errors.one_line_errors():\n"
        "    t1 = time.time()\n"
        "    try:\n"
        "        load_vqgan('nobody/not-a-cached-vqgan')\n"
        "    finally:\n"
        "        print(f'{time.time() - t1:.2f}')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    cli.one_line_error(r, "nobody/not-a-cached-vqgan", "HF_HUB_OFFLINE is set", hub_cli())
    assert float(r.stdout.strip()) < 2.0  # no network wait, no retries


# --- taming .ckpt files, read without torch -------------------------------------------------


def test_ckpt_read_without_torch_matches(fixtures, tmp_path, jax_io):
    torch = pytest.importorskip("torch", reason="writing a .ckpt needs torch (conformance extra)")
    from collections import OrderedDict

    sd = read_state_dict(fixtures / "taming_tiny" / "state_dict.npz")
    state = OrderedDict((k, torch.from_numpy(v)) for k, v in sd.items())
    state["loss.discriminator.main.0.weight"] = torch.zeros(8, 3, 4, 4)
    extra = {
        "noncontig": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),
        "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "long": torch.tensor([3, 4], dtype=torch.int64),
    }
    ckpt = {"state_dict": state, "global_step": 7, "epoch": 1, "extra": extra}
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    raw = torch_pickle.read_torch_file(path)
    assert raw["global_step"] == 7
    np.testing.assert_array_equal(raw["extra"]["noncontig"], np.arange(12.0).reshape(3, 4).T)
    np.testing.assert_array_equal(raw["extra"]["bf16"].astype(np.float32), [1.5, -2.0])
    assert raw["extra"]["long"].dtype == np.int64
    v = load_vqgan(path)
    io = dict(np.load(fixtures / "taming_tiny" / "io.npz"))
    np.testing.assert_array_equal(v.encode(_nhwc(io["pixels"])), io["encode_indices"])


def test_not_a_checkpoint_refused(tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a torch zip checkpoint"):
        load_vqgan(bad)


def test_init_params_shapes_match_eval_shape():
    cfg = VQGANConfig(
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        z_channels=16,
        embed_dim=8,
        n_embed=32,
        resolution=16,
    )
    real = flatten_paths(init_params(cfg, jax.random.PRNGKey(0)))
    shapes = flatten_paths(param_shapes(cfg))
    assert {k: v.shape for k, v in real.items()} == {k: v.shape for k, v in shapes.items()}
    v = VQGAN(cfg, init_params(cfg, jax.random.PRNGKey(0)))
    assert v.encode(np.zeros((3, 16, 16, 3), np.float32)).shape == (3, 64)
