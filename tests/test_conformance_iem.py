"""Our CE / RE / TE against the authors' Net1 / Net3 / Net4 rebuilt in torch from the documented
ops (shared/REFERENCE.md; the attribute names are theirs, so the state dicts have their keys), at
a small size, eval mode, the same weights: logits and gradients in E equal to float precision,
through a `.pth` written by torch.save and read by `cx.load_iem` (no torch at run time).

Needs the `conformance` extra (torch); skips with a message otherwise.
"""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="conformance extra not installed (needs torch)")
nn = torch.nn

import cortex_jax as cx  # noqa: E402
from cortex_jax.io import convert  # noqa: E402
from cortex_jax.models import iem  # noqa: E402


def _bn2(c):
    return nn.BatchNorm2d(c)


class Net1(nn.Module):
    def __init__(self, d, w, depth, hidden, classes, grid):
        super().__init__()
        for s in (1, 2):
            for i in range(1, depth + 1):
                cin = d if (s, i) == (1, 1) else w
                setattr(self, f"conv{s}_{i}", nn.Conv2d(cin, w, 3, 1, 1))
                setattr(self, f"bn{s}_{i}", _bn2(w))
        self.depth = depth
        self.fc1 = nn.Linear(w * (grid // 4) ** 2, hidden)
        self.bn_fc1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.bn_fc2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, classes)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        for s in (1, 2):
            for i in range(1, self.depth + 1):
                x = torch.relu(getattr(self, f"bn{s}_{i}")(getattr(self, f"conv{s}_{i}")(x)))
            x = nn.functional.max_pool2d(x, 2, 2)
        x = x.view(x.size(0), -1)
        x = self.dropout(torch.relu(self.bn_fc1(self.fc1(x))))
        return self.fc3(torch.relu(self.bn_fc2(self.fc2(x))))


class SE(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=[2, 3])))))
        return x * s[:, :, None, None]


class Block(nn.Module):
    def __init__(self, cin, c, stride, se_hidden):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = _bn2(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = _bn2(c)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != c:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), _bn2(c))
        self.se = SE(c, se_hidden)

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(self.se(out + self.shortcut(x)))


class Net3(nn.Module):
    def __init__(self, d, w, depth, hidden, classes, se_hidden):
        super().__init__()

        def layer(cin):
            return nn.Sequential(
                *[
                    Block(cin if j == 0 else w, w, 2 if j == 0 else 1, se_hidden)
                    for j in range(depth)
                ]
            )

        self.layer1, self.layer2 = layer(d), layer(w)
        self.fc1 = nn.Linear(w, hidden)
        self.bn_fc1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.dropout = nn.Dropout(0.4)

    def forward(self, x):
        x = self.layer2(self.layer1(x)).mean(dim=[2, 3])
        return self.fc2(self.dropout(torch.relu(self.bn_fc1(self.fc1(x)))))


class Layer(nn.Module):
    def __init__(self, w, heads, mlp, p):
        super().__init__()
        self.norm1 = nn.LayerNorm(w)
        self.self_attn = nn.MultiheadAttention(w, heads, dropout=p)
        self.dropout_attn = nn.Dropout(p)
        self.bn_attn = nn.BatchNorm1d(w)
        self.norm2 = nn.LayerNorm(w)
        self.mlp = nn.Sequential(
            nn.Linear(w, mlp), nn.GELU(), nn.Dropout(p), nn.Linear(mlp, w), nn.Dropout(p)
        )
        self.bn_mlp = nn.BatchNorm1d(w)

    def forward(self, x):
        h = self.norm1(x).transpose(0, 1)
        a = self.self_attn(h, h, h)[0].transpose(0, 1)
        x = x + self.dropout_attn(self.bn_attn(a.transpose(1, 2)).transpose(1, 2))
        m = self.mlp(self.norm2(x))
        return x + self.bn_mlp(m.transpose(1, 2)).transpose(1, 2)


class Net4(nn.Module):
    def __init__(self, d, w, depth, hidden, classes, heads, mlp, grid, p=0.2):
        super().__init__()
        self.w, self.n = w, grid * grid
        self.proj = nn.Sequential(nn.Linear(d, w), nn.LayerNorm(w), nn.GELU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, self.n + 1, w) * 0.02)
        self.dropout = nn.Dropout(p)
        self.encoder = nn.ModuleList([Layer(w, heads, mlp, p) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(w)
        self.pre_classifier = nn.Sequential(
            nn.Linear(w, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(p)
        )
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        b = x.size(0)
        x = self.proj(x.permute(0, 2, 3, 1).reshape(b, self.n, -1)) * math.sqrt(self.w)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1) + self.pos_embed
        x = self.dropout(x)
        for layer in self.encoder:
            x = layer(x)
        return self.fc(self.pre_classifier(self.final_norm(x)[:, 0]))


GRID, DIM, CLASSES = 8, 16, 7


def _net(arch):
    torch.manual_seed({"ce": 0, "re": 1, "te": 2}[arch])
    if arch == "ce":
        net = Net1(DIM, 12, 2, 24, CLASSES, GRID)
    elif arch == "re":
        net = Net3(DIM, 16, 2, 24, CLASSES, se_hidden=4)
    else:
        net = Net4(DIM, 16, 2, 24, CLASSES, heads=4, mlp=32, grid=GRID)
    # Trained-looking BatchNorm statistics, so eval mode is not an identity.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return net.eval()


@pytest.mark.parametrize("arch", iem.ARCHITECTURES)
def test_authors_pth_gives_their_logits_and_gradients(arch, tmp_path):
    net = _net(arch)
    path = tmp_path / f"net_{arch}.pth"
    torch.save(net.state_dict(), path)  # as their train.py saves: a bare state dict
    loaded = cx.load_iem(path, arch=arch, heads=4 if arch == "te" else 8)
    assert loaded.config.arch == arch and loaded.config.n_classes == CLASSES
    assert loaded.class_names == tuple(f"class{i}" for i in range(CLASSES))

    e = np.random.default_rng(0).normal(0, 1, (3, GRID, GRID, DIM)).astype(np.float32)
    x = torch.tensor(
        np.ascontiguousarray(e.transpose(0, 3, 1, 2)), requires_grad=True
    )  # their (B, d, m, m)
    want = net(x)
    want[:, 2].sum().backward()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(loaded.predict(jnp.asarray(e)))
        grad = np.asarray(jax.grad(lambda v: loaded.predict(v)[:, 2].sum())(jnp.asarray(e)))
    want_np = want.detach().numpy()
    scale = np.abs(want_np).max()
    np.testing.assert_allclose(got, want_np, rtol=0, atol=2e-5 * scale)
    want_grad = x.grad.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=2e-5 * np.abs(want_grad).max())


@pytest.mark.parametrize("arch", iem.ARCHITECTURES)
def test_our_weights_load_into_their_network(arch):
    """The inverse converter writes keys and layouts their module accepts (strict), and the two
    compute the same function."""
    net = _net(arch)
    theirs = {k: v.numpy() for k, v in net.state_dict().items()}
    cfg, _, _ = convert.infer_authors_iem_config(theirs, heads=4)
    # other weights, made in our layout: theirs converted, then moved
    rng = np.random.default_rng(2)
    ours = jax.tree.map(
        lambda a: a + rng.uniform(0.0, 0.1, a.shape).astype(np.float32),
        convert.convert_authors_iem(theirs, cfg, GRID),
    )
    sd = convert.authors_iem_state_dict(cfg, ours, GRID)
    net.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=False)
    missing = set(net.state_dict()) - set(sd)
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    e = np.random.default_rng(1).normal(0, 1, (2, GRID, GRID, DIM)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.tensor(np.ascontiguousarray(e.transpose(0, 3, 1, 2)))).numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(iem.predictor(cfg, ours)(jnp.asarray(e)))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_wrong_architecture_flag_is_refused_in_one_line(tmp_path):
    path = tmp_path / "net3.pth"
    torch.save(_net("re").state_dict(), path)
    with pytest.raises(ValueError, match=r"net3\.pth: it holds the authors' RE, not CE"):
        cx.load_iem(path, arch="ce")
    with pytest.raises(FileNotFoundError, match="IEM not found"):
        cx.load_iem(tmp_path / "missing.pth")


def test_explain_codebook_takes_the_authors_pth(tmp_path, fixtures):
    """The flagship command on an authors'-format Net1 for the 1000 ImageNet classes (random
    weights at the tiny fixture VQGAN's size: 16×16 tokens, d 32)."""
    import json

    from PIL import Image

    from cortex_jax.io.images import to_uint8
    from cortex_jax.toy import world
    from tests.helpers.cli import one_line_error, run

    cfg = iem.IEMConfig("ce", 1000, width=8, depth=1, hidden=16)
    v = iem.init_variables(cfg, jax.random.PRNGKey(0), 16, 32)
    sd = convert.authors_iem_state_dict(cfg, v, 16)
    torch.save({k: torch.tensor(a) for k, a in sd.items()}, tmp_path / "net1.pth")
    png = tmp_path / "bird.png"
    Image.fromarray(to_uint8(world.render(["red-star"], seed=1).pixels)[0]).save(png)
    vq, out = str(fixtures / "vqgan_jax_tiny"), tmp_path / "out"
    args = ["--concept", "goldfinch", "--vqgan", vq, "--iem-checkpoint", str(tmp_path / "net1.pth")]
    r = run("explain.codebook", *args, "--iem", "ce", "--from-image", str(png), "--steps", "2",
            "--log-every", "1", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "tokens.json").read_text())["target"] == "goldfinch"
    one_line_error(run("explain.codebook", *args, "--iem", "re"), "holds the authors' CE, not RE")
    other = str(Path(cx.__file__).parent / "toy" / "weights" / "vqgan")  # 8×8 tokens
    one_line_error(
        run("explain.codebook", *args[:3], other, *args[4:]), "cannot read this VQGAN's E"
    )
