"""The evaluation classifier: torchvision's ResNet in Flax, and its state-dict loader.

torchvision itself has no CPU wheel here, so the reference is torch modules built in this file
with torchvision's structure and parameter names (the names and layouts are what the loader
converts); their state dicts are saved with torch.save and read back without torch.
"""

import jax
import numpy as np
import pytest

from cortex_jax.core import trees
from cortex_jax.io import folders, sources
from cortex_jax.models import classifier

torch = pytest.importorskip("torch")
nn = torch.nn


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample = None
        if stride != 1 or cin != c:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c)
            )

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)  # torchvision v1.5: stride here
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, 4 * c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * c)
        self.downsample = None
        if stride != 1 or cin != 4 * c:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, 4 * c, 1, stride, bias=False), nn.BatchNorm2d(4 * c)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(y)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class _TorchResNet(nn.Module):
    def __init__(self, block, layers, width, n_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for i, n in enumerate(layers):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width * 2**i, 2 if (j == 0 and i > 0) else 1))
                cin = width * 2**i * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, n_classes)
        self.n_layers = len(layers)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean((2, 3)))


def _reference(block, layers, width=8, n_classes=7, seed=0):
    torch.manual_seed(seed)
    net = _TorchResNet(block, layers, width, n_classes)
    with torch.no_grad():  # non-trivial running statistics, so BN's eval form is exercised
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize(
    "block, layers, kind", [(_Basic, (2, 1, 1, 1), "basic"), (_Bottleneck, (1, 2, 1), "bottleneck")]
)
def test_torchvision_state_dict_reproduces_torch_probabilities(tmp_path, block, layers, kind):
    net = _reference(block, layers)
    path = tmp_path / "resnet.pth"
    torch.save(net.state_dict(), path)
    cfg, _, probs = sources.load_classifier(path, image_size=64)
    assert cfg == classifier.ResNetConfig(kind, layers, 8, 7, 64)
    px = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    mean = np.array(classifier.IMAGENET_MEAN, np.float32)
    std = np.array(classifier.IMAGENET_STD, np.float32)
    x = ((px + 1) / 2 - mean) / std  # torchvision's ToTensor + Normalize, on a 64×64 input
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(x.transpose(0, 3, 1, 2))), -1).numpy()
    np.testing.assert_allclose(probs(px), want, atol=2e-5)


def test_preprocess_resizes_and_normalises_like_torchvision():
    px = np.full((2, 16, 16, 3), 0.5, np.float32)  # a flat image: resizing keeps it flat
    x = np.asarray(classifier.preprocess(px, 32))
    want = (0.75 - np.array(classifier.IMAGENET_MEAN)) / np.array(classifier.IMAGENET_STD)
    assert x.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(x, np.broadcast_to(want, x.shape), atol=1e-6)
    cfg, _, probs = sources.load_classifier("random:resnet18:5:8", image_size=32)
    assert cfg.layers == (2, 2, 2, 2) and cfg.n_classes == 5 and cfg.width == 8
    out = probs(np.random.default_rng(1).uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32))
    assert out.shape == (2, 5) and np.allclose(out.sum(1), 1, atol=1e-5)


def test_random_stand_in_weights_follow_the_layout_and_the_seed():
    """`random:` classifiers and the runlocal VQGMs take numpy-filled weights in the model's
    layout (trees.random_like): unit norm scales and variances, zero biases and means,
    kernels N(0, 1/fan_in); the same seed, the same weights."""
    net = classifier.ResNetConfig.named("resnet18")
    shapes = jax.eval_shape(lambda: classifier.init_variables(net))
    v, again = trees.random_like(shapes, 3), trees.random_like(shapes, 3)
    flat = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(v)}
    assert jax.tree.map(lambda a: (a.shape, a.dtype), v) == jax.tree.map(
        lambda s: (s.shape, s.dtype), shapes
    )
    for path, x in flat.items():
        if path.endswith("['scale']") or path.endswith("['var']"):
            assert (x == 1).all(), path
        elif path.endswith("['bias']") or path.endswith("['mean']"):
            assert (x == 0).all(), path
    conv = flat["['params']['conv1']['kernel']"]  # 7×7×3 fan-in
    assert abs(conv.std() * np.sqrt(7 * 7 * 3) - 1) < 0.05
    jax.tree.map(np.testing.assert_array_equal, v, again)
    assert not np.array_equal(trees.random_like(shapes, 4)["params"]["conv1"]["kernel"], conv)
    assert trees.random_like({"n_norm": {"w": jax.ShapeDtypeStruct((3,), np.float32)}})["n_norm"][
        "w"
    ].tolist() == [1, 1, 1]  # a vector under a norm (LlamaGen's RMSNorm weights)


def test_folder_round_trip_and_clear_errors(tmp_path):
    cfg, variables, probs = sources.load_classifier("random:resnet18:4:8", image_size=32)
    folders.save_classifier(tmp_path / "clf", cfg, variables)
    cfg2, _, probs2 = sources.load_classifier(tmp_path / "clf")
    assert cfg2 == cfg
    px = np.zeros((1, 32, 32, 3), np.float32)
    np.testing.assert_allclose(probs2(px), probs(px), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="classifier not found: 'nope.pth'"):
        sources.load_classifier("nope.pth")
    with pytest.raises(ValueError, match="unknown classifier architecture 'resnet7'"):
        sources.load_classifier("random:resnet7")
    sd = _reference(_Basic, (1, 1, 1, 1)).state_dict()
    sd.pop("layer1.0.bn2.running_var")
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="lacks parameter layer1_0/bn2/var"):
        sources.load_classifier(tmp_path / "broken.pth", image_size=32)
