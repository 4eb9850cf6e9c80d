"""The IEMs are the authors' networks (YangTianze009/CORTEX VQGAN_explanation/model.py), block by
block against independent NumPy references, and their state dicts convert both ways.

Each reference takes the switch the old code got wrong (RE: squeeze-excitation before or after
the shortcut is added, PyTorch's (1, 1) or flax "SAME"'s (0, 1) stride-2 padding; TE: LayerNorm
epsilon 1e-5 or 1e-6), and each test also checks that the wrong setting moves the output on its
input, so these tests would have caught the departures. The whole networks against a torch
rebuild are in tests/test_conformance_iem.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.io import convert
from cortex_jax.models import iem

RNG = np.random.default_rng(0)


def _np_conv(x, w_oihw, bias=None, stride=1, pad=(1, 1)):
    """x (B, H, W, Cin), weight in PyTorch's OIHW layout, padding (before, after) per side."""
    k = w_oihw.shape[-1]
    x = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    ho = (x.shape[1] - k) // stride + 1
    wo = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w_oihw.shape[0]))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j, :] = np.einsum("bhwc,ochw->bo", patch, w_oihw)
    return out if bias is None else out + bias


def _np_bn(x, p):  # eval mode, PyTorch's eps
    return (x - p["running_mean"]) / np.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]


def _np_ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _relu(x):
    return np.maximum(x, 0)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _rand_bn(c):
    return {
        "weight": RNG.uniform(0.5, 1.5, c),
        "bias": RNG.normal(0, 0.3, c),
        "running_mean": RNG.normal(0, 0.3, c),
        "running_var": RNG.uniform(0.5, 2.0, c),
    }


def _bn_vars(p):
    return {"scale": p["weight"], "bias": p["bias"]}, {
        "mean": p["running_mean"],
        "var": p["running_var"],
    }


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


# --- RE: one residual block ------------------------------------------------------------------


def _re_block_reference(x, p, se_after_shortcut=True, pad=(1, 1)):
    """The authors' ResidualBlock (stride 2, with the 1×1 conv + BN shortcut)."""
    h = _relu(_np_bn(_np_conv(x, p["conv1"], stride=2, pad=pad), p["bn1"]))
    h = _np_bn(_np_conv(h, p["conv2"]), p["bn2"])
    short = _np_bn(_np_conv(x, p["short"], stride=2, pad=(0, 0)), p["bn_short"])

    def se(y):
        s = _relu(y.mean((1, 2)) @ p["se1_w"].T + p["se1_b"])
        return y * _sigmoid(s @ p["se2_w"].T + p["se2_b"])[:, None, None, :]

    return _relu(se(h + short)) if se_after_shortcut else _relu(se(h) + short)


def test_re_block_is_the_authors_residual_block():
    cin, c, hid = 3, 4, 2
    p = {
        "conv1": RNG.normal(0, 0.5, (c, cin, 3, 3)),
        "conv2": RNG.normal(0, 0.5, (c, c, 3, 3)),
        "short": RNG.normal(0, 0.5, (c, cin, 1, 1)),
        "bn1": _rand_bn(c),
        "bn2": _rand_bn(c),
        "bn_short": _rand_bn(c),
        "se1_w": RNG.normal(0, 1, (hid, c)),
        "se1_b": RNG.normal(0, 0.5, hid),
        "se2_w": RNG.normal(0, 1, (c, hid)),
        "se2_b": RNG.normal(0, 0.5, c),
    }
    x = RNG.normal(0, 1, (2, 6, 6, cin))
    params, stats = {}, {}
    for name, w in (("conv1", "conv1"), ("conv2", "conv2"), ("conv_short", "short")):
        params[name] = {"kernel": p[w].transpose(2, 3, 1, 0)}
    for name, b in (("bn1", "bn1"), ("bn2", "bn2"), ("bn_short", "bn_short")):
        params[name], stats[name] = _bn_vars(p[b])
    params["se_fc1"] = {"kernel": p["se1_w"].T, "bias": p["se1_b"]}
    params["se_fc2"] = {"kernel": p["se2_w"].T, "bias": p["se2_b"]}
    block = iem.SEBlock(c, 2, hid)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(
            block.apply({"params": params, "batch_stats": stats}, jnp.asarray(x), False)
        )
    ref = _re_block_reference(x, p)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # Each departure the old code had changes this output: the test can fail on either.
    assert _rel(_re_block_reference(x, p, se_after_shortcut=False), ref) > 0.05
    assert _rel(_re_block_reference(x, p, pad=(0, 1)), ref) > 0.05


# --- TE: one encoder layer -------------------------------------------------------------------


def _te_layer_reference(x, p, heads, eps=1e-5):
    """The authors' TransformerEncoderLayerV2 in eval mode (torch MultiheadAttention maths)."""
    b, t, c = x.shape
    hd = c // heads

    def bn(y, q):  # BatchNorm1d over channels of (B, C, T)
        return _np_bn(y, q)

    h = _np_ln(x, p["ln1_w"], p["ln1_b"], eps)
    qkv = h @ p["in_w"].T + p["in_b"]
    q, k, v = (qkv[..., i * c : (i + 1) * c].reshape(b, t, heads, hd) for i in range(3))
    att = np.einsum("bqhd,bkhd->bhqk", q / np.sqrt(hd), k)
    att = np.exp(att - att.max(-1, keepdims=True))
    att = att / att.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, c) @ p["out_w"].T + p["out_b"]
    x = x + bn(o, p["bn_attn"])
    h = _np_ln(x, p["ln2_w"], p["ln2_b"], eps)
    from scipy.special import erf

    h = h @ p["m1_w"].T + p["m1_b"]
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    return x + bn(h @ p["m2_w"].T + p["m2_b"], p["bn_mlp"])


def test_te_layer_is_the_authors_encoder_layer():
    c, heads, mlp = 8, 2, 16
    p = {
        "ln1_w": RNG.uniform(0.5, 1.5, c),
        "ln1_b": RNG.normal(0, 0.1, c),
        "ln2_w": RNG.uniform(0.5, 1.5, c),
        "ln2_b": RNG.normal(0, 0.1, c),
        "in_w": RNG.normal(0, 0.4, (3 * c, c)),
        "in_b": RNG.normal(0, 0.1, 3 * c),
        "out_w": RNG.normal(0, 0.4, (c, c)),
        "out_b": RNG.normal(0, 0.1, c),
        "m1_w": RNG.normal(0, 0.4, (mlp, c)),
        "m1_b": RNG.normal(0, 0.1, mlp),
        "m2_w": RNG.normal(0, 0.4, (c, mlp)),
        "m2_b": RNG.normal(0, 0.1, c),
        "bn_attn": _rand_bn(c),
        "bn_mlp": _rand_bn(c),
    }
    # Tokens whose features vary by ~3e-3 (variance ~1e-5): there the epsilon matters.
    x = 1.0 + 3e-3 * RNG.normal(0, 1, (2, 5, c))
    hd = c // heads
    split = lambda a, i: a[i * c : (i + 1) * c]
    params = {
        "ln1": {"scale": p["ln1_w"], "bias": p["ln1_b"]},
        "ln2": {"scale": p["ln2_w"], "bias": p["ln2_b"]},
        "attn": {
            name: {
                "kernel": split(p["in_w"], i).T.reshape(c, heads, hd),
                "bias": split(p["in_b"], i).reshape(heads, hd),
            }
            for i, name in enumerate(("query", "key", "value"))
        }
        | {"out": {"kernel": p["out_w"].T.reshape(heads, hd, c), "bias": p["out_b"]}},
        "mlp1": {"kernel": p["m1_w"].T, "bias": p["m1_b"]},
        "mlp2": {"kernel": p["m2_w"].T, "bias": p["m2_b"]},
    }
    stats = {}
    params["bn_attn"], stats["bn_attn"] = _bn_vars(p["bn_attn"])
    params["bn_mlp"], stats["bn_mlp"] = _bn_vars(p["bn_mlp"])
    layer = iem._EncoderLayer(c, heads, mlp)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(
            layer.apply({"params": params, "batch_stats": stats}, jnp.asarray(x), False)
        )
    ref = _te_layer_reference(x, p, heads)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    assert _rel(_te_layer_reference(x, p, heads, eps=1e-6), ref) > 0.01  # flax's default eps


# --- CE: the whole network, from an authors' state dict -------------------------------------


def _ce_reference(x, sd, depth):
    """Net1 in NumPy on x (B, m, m, d), with the authors' keys and their (C, H, W) flatten."""
    for s in (1, 2):
        for i in range(1, depth + 1):
            x = _np_conv(x, sd[f"conv{s}_{i}.weight"], sd[f"conv{s}_{i}.bias"])
            x = _relu(_np_bn(x, {k: sd[f"bn{s}_{i}.{k}"] for k in _BN_KEYS}))
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).max((2, 4))
    x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # PyTorch's view(B, -1) of NCHW
    for j in (1, 2):
        x = x @ sd[f"fc{j}.weight"].T + sd[f"fc{j}.bias"]
        x = _relu(_np_bn(x, {k: sd[f"bn_fc{j}.{k}"] for k in _BN_KEYS}))
    return x @ sd["fc3.weight"].T + sd["fc3.bias"]


_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def _random_state_dict(cfg, grid, dim):
    """Random weights under the authors' key names: the keys and shapes come from the authors'
    network sizes written out here, not from our converter's table."""
    shapes = _authors_shapes(cfg, grid, dim)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("running_var"):
            sd[k] = RNG.uniform(0.5, 2.0, shape).astype(np.float32)
        elif k.endswith("num_batches_tracked"):
            sd[k] = np.array(7, np.int64)
        else:
            sd[k] = RNG.normal(0, 0.3, shape).astype(np.float32)
    return sd


def _authors_shapes(cfg, grid, dim):
    w, out = cfg.width, {}

    def bn(name, c):
        for k in (*_BN_KEYS, "num_batches_tracked"):
            out[f"{name}.{k}"] = () if k == "num_batches_tracked" else (c,)

    def lin(name, i, o, bias=True):
        out[f"{name}.weight"] = (o, i)
        if bias:
            out[f"{name}.bias"] = (o,)

    if cfg.arch == "ce":
        for s in (1, 2):
            for i in range(1, cfg.layers + 1):
                out[f"conv{s}_{i}.weight"] = (w, dim if (s, i) == (1, 1) else w, 3, 3)
                out[f"conv{s}_{i}.bias"] = (w,)
                bn(f"bn{s}_{i}", w)
        lin("fc1", w * (grid // 4) ** 2, cfg.head_width)
        bn("bn_fc1", cfg.head_width)
        lin("fc2", cfg.head_width, cfg.head_width)
        bn("bn_fc2", cfg.head_width)
        lin("fc3", cfg.head_width, cfg.n_classes)
    elif cfg.arch == "re":
        for s in (1, 2):
            for j in range(cfg.layers):
                pre, cin = f"layer{s}.{j}", (dim if s == 1 else w) if j == 0 else w
                out[f"{pre}.conv1.weight"] = (w, cin, 3, 3)
                bn(f"{pre}.bn1", w)
                out[f"{pre}.conv2.weight"] = (w, w, 3, 3)
                bn(f"{pre}.bn2", w)
                if j == 0:
                    out[f"{pre}.shortcut.0.weight"] = (w, cin, 1, 1)
                    bn(f"{pre}.shortcut.1", w)
                lin(f"{pre}.se.fc1", w, cfg.se_hidden)
                lin(f"{pre}.se.fc2", cfg.se_hidden, w)
        lin("fc1", w, cfg.head_width)
        bn("bn_fc1", cfg.head_width)
        lin("fc2", cfg.head_width, cfg.n_classes)
    else:
        lin("proj.0", dim, w)
        out["proj.1.weight"] = out["proj.1.bias"] = (w,)
        out["cls_token"], out["pos_embed"] = (1, 1, w), (1, grid * grid + 1, w)
        for i in range(cfg.layers):
            pre = f"encoder.{i}"
            out[f"{pre}.norm1.weight"] = out[f"{pre}.norm1.bias"] = (w,)
            out[f"{pre}.self_attn.in_proj_weight"] = (3 * w, w)
            out[f"{pre}.self_attn.in_proj_bias"] = (3 * w,)
            lin(f"{pre}.self_attn.out_proj", w, w)
            bn(f"{pre}.bn_attn", w)
            out[f"{pre}.norm2.weight"] = out[f"{pre}.norm2.bias"] = (w,)
            lin(f"{pre}.mlp.0", w, cfg.mlp)
            lin(f"{pre}.mlp.3", cfg.mlp, w)
            bn(f"{pre}.bn_mlp", w)
        out["final_norm.weight"] = out["final_norm.bias"] = (w,)
        lin("pre_classifier.0", w, cfg.head_width)
        out["pre_classifier.1.weight"] = out["pre_classifier.1.bias"] = (cfg.head_width,)
        lin("fc", cfg.head_width, cfg.n_classes)
    return out


SMALL = {
    "ce": iem.IEMConfig("ce", 5, width=6, depth=2, hidden=10),
    "re": iem.IEMConfig("re", 5, width=8, depth=2, hidden=10, se_hidden=2),
    "te": iem.IEMConfig("te", 5, width=8, depth=2, hidden=12, heads=2, mlp=16),
}
GRID, DIM = 8, 4


def test_ce_from_an_authors_state_dict_equals_a_numpy_net1():
    cfg = SMALL["ce"]
    sd = _random_state_dict(cfg, GRID, DIM)
    got_cfg, grid, dim = convert.infer_authors_iem_config(sd)
    assert (got_cfg, grid, dim) == (cfg, GRID, DIM)
    variables = convert.convert_authors_iem(sd, cfg, GRID)
    x = RNG.normal(0, 1, (3, GRID, GRID, DIM)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(iem.predictor(cfg, variables)(jnp.asarray(x)))
    ref = _ce_reference(x.astype(np.float64), {k: v.astype(np.float64) for k, v in sd.items()}, 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("arch", iem.ARCHITECTURES)
def test_authors_state_dict_converts_both_ways(arch):
    cfg = SMALL[arch]
    sd = _random_state_dict(cfg, GRID, DIM)
    got_cfg, grid, dim = convert.infer_authors_iem_config(sd, heads=cfg.heads)
    assert got_cfg == cfg and dim == DIM and (arch == "re" or grid == GRID)
    assert convert.authors_iem_arch(sd) == arch
    variables = convert.convert_authors_iem(sd, cfg, GRID)
    want = jax.eval_shape(lambda: iem.init_variables(cfg, jax.random.PRNGKey(0), GRID, DIM))
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda a: a.shape, want)
    back = convert.authors_iem_state_dict(cfg, variables, GRID)
    assert set(back) == {k for k in sd if not k.endswith("num_batches_tracked")}
    for k, v in back.items():
        np.testing.assert_array_equal(v, sd[k], err_msg=k)
    # and ours → theirs → ours, from our own random initialisation
    ours = iem.init_variables(cfg, jax.random.PRNGKey(1), GRID, DIM)
    again = convert.convert_authors_iem(convert.authors_iem_state_dict(cfg, ours, GRID), cfg, GRID)
    jax.tree.map(np.testing.assert_array_equal, again, jax.tree.map(np.asarray, ours))


def test_foreign_or_damaged_state_dicts_are_refused_in_one_line():
    sd = _random_state_dict(SMALL["re"], GRID, DIM)
    with pytest.raises(ValueError, match="not one of the authors' IEMs"):
        convert.authors_iem_arch({"weight": np.zeros(3)})
    missing = {k: v for k, v in sd.items() if k != "layer2.0.se.fc1.bias"}
    with pytest.raises(ValueError, match=r"lacks layer2\.0\.se\.fc1\.bias"):
        convert.convert_authors_iem(missing, SMALL["re"], GRID)
    with pytest.raises(ValueError, match=r"has extra\.weight"):
        convert.convert_authors_iem({**sd, "extra.weight": np.zeros(2)}, SMALL["re"], GRID)
    # DataParallel's prefix is dropped
    wrapped = {f"module.{k}": v for k, v in sd.items()}
    assert convert.infer_authors_iem_config(wrapped)[0] == SMALL["re"]


def test_toy_bundle_takes_a_users_iem_folder_or_authors_state_dict(tmp_path):
    from cortex_jax import toy
    from cortex_jax.io import folders

    e = RNG.normal(0, 1, (2, 8, 8, 32)).astype(np.float32)
    shipped = toy.models("re").predict(e)
    # a train.iem folder (here the shipped one, by path) and, arch checked, the same as a .npz
    # state dict in the authors' layout (read_state_dict takes .npz like .pth)
    folder = toy.WEIGHTS_DIR / "iem_re"
    np.testing.assert_array_equal(toy.models(iem_checkpoint=folder).predict(e), shipped)
    cfg, variables, _ = folders.read_iem_folder(folder)
    np.savez(tmp_path / "net3.npz", **convert.authors_iem_state_dict(cfg, variables, 8))
    bundle = toy.models("re", iem_checkpoint=tmp_path / "net3.npz")
    np.testing.assert_allclose(bundle.predict(e), shipped, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="holds the authors' RE, not TE"):
        toy.models("te", iem_checkpoint=tmp_path / "net3.npz")
    big = iem.IEMConfig("ce", 14, width=4, depth=1, hidden=8)  # an ImageNet-grid CE: 16×16, d 256
    v = iem.init_variables(big, jax.random.PRNGKey(0), 16, 256)
    np.savez(tmp_path / "net1.npz", **convert.authors_iem_state_dict(big, v, 16))
    with pytest.raises(ValueError, match="cannot read the toy VQGAN's E"):
        toy.models(iem_checkpoint=tmp_path / "net1.npz")


def test_converter_puts_each_authors_tensor_where_the_layers_read_it():
    """Spot checks written from PyTorch's documented layouts, independent of the converter's
    table (a self-consistent wrong mapping would survive the round trip alone)."""
    cfg = SMALL["te"]
    sd = _random_state_dict(cfg, GRID, DIM)
    p = convert.convert_authors_iem(sd, cfg, GRID)["params"]
    w, h = cfg.width, cfg.heads
    hd = w // h
    in_w = sd["encoder.1.self_attn.in_proj_weight"]  # rows: q (w), k (w), v (w); head-major
    for j, name in enumerate(("query", "key", "value")):
        for head in range(h):
            rows = in_w[j * w + head * hd : j * w + (head + 1) * hd]  # (hd, in)
            np.testing.assert_array_equal(p["layer1"]["attn"][name]["kernel"][:, head, :], rows.T)
    out_w = sd["encoder.1.self_attn.out_proj.weight"]  # (out, in), in = heads × hd
    np.testing.assert_array_equal(p["layer1"]["attn"]["out"]["kernel"][1], out_w[:, hd : 2 * hd].T)
    np.testing.assert_array_equal(p["layer0"]["mlp2"]["kernel"], sd["encoder.0.mlp.3.weight"].T)
    np.testing.assert_array_equal(p["head_ln"]["scale"], sd["pre_classifier.1.weight"])

    cfg = SMALL["re"]
    sd = _random_state_dict(cfg, GRID, DIM)
    v = convert.convert_authors_iem(sd, cfg, GRID)
    k = sd["layer2.0.conv1.weight"]  # (out, in, kh, kw)
    np.testing.assert_array_equal(
        v["params"]["stage1_0"]["conv1"]["kernel"][2, 0, 3, 5], k[5, 3, 2, 0]
    )
    np.testing.assert_array_equal(
        v["batch_stats"]["stage0_1"]["bn2"]["var"], sd["layer1.1.bn2.running_var"]
    )
    np.testing.assert_array_equal(
        v["params"]["stage1_0"]["bn_short"]["scale"], sd["layer2.0.shortcut.1.weight"]
    )
    np.testing.assert_array_equal(
        v["params"]["stage0_1"]["se_fc2"]["kernel"], sd["layer1.1.se.fc2.weight"].T
    )
