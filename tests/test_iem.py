"""IEM architectures: output shapes, paper-size parameter counts, a differentiable predict."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.models import iem
from cortex_jax.models.vqgan import count_params

# Parameters at ImageNet size (1000 classes, E 16×16×256), counted with jax.eval_shape.
IMAGENET_PARAMS = {"ce": 72_160_232, "re": 30_843_048, "te": 39_671_272}


@pytest.mark.parametrize("arch", iem.ARCHITECTURES)
def test_imagenet_size_parameter_count(arch):
    cfg = iem.IEMConfig(arch, 1000)
    v = jax.eval_shape(lambda: iem.init_variables(cfg, jax.random.PRNGKey(0), 16, 256))
    assert count_params(v["params"])[0] == IMAGENET_PARAMS[arch]
    out = jax.eval_shape(
        iem.predict_fn(cfg),
        v["params"],
        v["batch_stats"],
        jax.ShapeDtypeStruct((4, 16, 16, 256), jnp.float32),
    )
    assert out.shape == (4, 1000)


def test_ce_matches_the_authors_layer_sizes():
    v = jax.eval_shape(
        lambda: iem.init_variables(iem.IEMConfig("ce", 1000), jax.random.PRNGKey(0), 16, 256)
    )
    p = v["params"]
    assert p["conv0_0"]["kernel"].shape == (3, 3, 256, 512)
    assert p["fc1"]["kernel"].shape == (8192, 4096)  # 512 × 4 × 4 after two max-pools
    assert p["fc2"]["kernel"].shape == (4096, 4096) and p["out"]["kernel"].shape == (4096, 1000)


@pytest.mark.parametrize("arch", iem.ARCHITECTURES)
def test_small_variant_predict_is_pure_and_differentiable(arch):
    cfg = iem.IEMConfig(arch, 5, width=32, depth=1, hidden=32, heads=2, mlp=32, se_hidden=4)
    v = iem.init_variables(cfg, jax.random.PRNGKey(0), 8, 16)
    predict = iem.predict_fn(cfg)
    e = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 16))
    a, b = predict(v["params"], v["batch_stats"], e), predict(v["params"], v["batch_stats"], e)
    np.testing.assert_array_equal(a, b)  # eval mode: no dropout, running statistics
    np.testing.assert_allclose(predict(v["params"], v["batch_stats"], e[:1]), a[:1], atol=1e-5)
    g = jax.grad(lambda x: predict(v["params"], v["batch_stats"], x)[:, 2].sum())(e)
    assert g.shape == e.shape and np.isfinite(g).all() and np.abs(g).max() > 0


def test_bad_config_refused():
    with pytest.raises(ValueError, match="unknown IEM architecture 'vit'"):
        iem.IEMConfig("vit", 10)
    with pytest.raises(ValueError, match="not divisible by heads=3"):
        iem.IEMConfig("te", 10, width=64, heads=3)
