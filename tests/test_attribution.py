"""Attribution methods against closed forms on a linear IEM f(E) = Σ W_y·E + b_y, IG's
completeness on a nonlinear one, the seam's invariances (batching, chunking, the smoothgrad
shorthand bit for bit), and the one-line errors at the boundary."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cortex_jax as cx
from cortex_jax.method import attribution, tis

B, M, D, C, K = 3, 4, 5, 6, 9
RNG = np.random.default_rng(0)
W = RNG.standard_normal((M * M * D, C)).astype(np.float32)
BIAS = RNG.standard_normal(C).astype(np.float32)
CODEBOOK = RNG.standard_normal((K, D)).astype(np.float32)
E = RNG.standard_normal((B, M, M, D)).astype(np.float32)
Y = np.array([0, 3, 5])


def _linear(x, w, b):
    return x.reshape(x.shape[0], -1) @ w + b


linear = functools.partial(_linear, w=jnp.asarray(W), b=jnp.asarray(BIAS))
W1 = (RNG.standard_normal((M * M * D, 16)) / 4).astype(np.float32)
W2 = RNG.standard_normal((16, C)).astype(np.float32)


def _mlp(x, w1, w2):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2


mlp = functools.partial(_mlp, w1=jnp.asarray(W1), w2=jnp.asarray(W2))


def other_mlp(x):
    return jnp.sin(x.reshape(x.shape[0], -1) @ jnp.asarray(W)) * 2.0


def w_y():
    return W[:, Y].T.reshape(B, M, M, D)  # ∇_E logit_y of the linear model, per image


def run(method, predict=linear, e=E, y=Y, **options):
    return cx.token_attribution(predict, e, y, jax.random.PRNGKey(1), method, **options)


BASELINES = {
    "zeros": np.zeros(D, np.float32),
    "mean": CODEBOOK.mean(0),
    4: CODEBOOK[4],
}


def test_gradient_and_grad_x_input_of_a_linear_model():
    g = run("gradient", objective="logit")
    np.testing.assert_allclose(g.channels, w_y(), rtol=1e-6)
    np.testing.assert_allclose(g.positions, np.abs(w_y()).max(-1), rtol=1e-6)
    gx = run("grad_x_input", objective="logit")
    np.testing.assert_allclose(gx.channels, w_y() * E, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx.positions, (w_y() * E).sum(-1), rtol=1e-5, atol=1e-5)
    # completeness w.r.t. the zero input: Σ positions = f(E) − f(0) = f(E) − b_y
    f = np.asarray(linear(jnp.asarray(E)))[np.arange(B), Y]
    np.testing.assert_allclose(gx.positions.sum((1, 2)), f - BIAS[Y], rtol=1e-4, atol=1e-4)


def test_smoothgrad_of_a_linear_model_is_the_weight_slice():
    s = run("smoothgrad", objective="logit", n_samples=5, alpha=0.5)
    np.testing.assert_allclose(s.channels, w_y(), rtol=1e-5)
    np.testing.assert_allclose(s.positions, np.abs(w_y()).max(-1), rtol=1e-5)


@pytest.mark.parametrize("rule", attribution.RULES)
@pytest.mark.parametrize("baseline", list(BASELINES))
def test_integrated_gradients_of_a_linear_model_is_exact(rule, baseline):
    ig = run(
        "integrated_gradients",
        objective="logit",
        steps=3,
        rule=rule,
        baseline=baseline,
        codebook=CODEBOOK,
    )
    base = np.broadcast_to(BASELINES[baseline], E.shape)
    np.testing.assert_allclose(ig.channels, w_y() * (E - base), rtol=1e-5, atol=1e-5)
    f = lambda x: np.asarray(linear(jnp.asarray(x)))[np.arange(B), Y]
    np.testing.assert_allclose(ig.positions.sum((1, 2)), f(E) - f(base), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("baseline", list(BASELINES))
def test_occlusion_of_a_linear_model_in_closed_form(baseline):
    occ = run("occlusion", objective="logit", baseline=baseline, codebook=CODEBOOK)
    want = (w_y() * (E - BASELINES[baseline])).sum(-1)  # f(E) − f(E with p occluded)
    np.testing.assert_allclose(occ.positions, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(occ.channels, np.broadcast_to(occ.positions[..., None], E.shape))


def test_occlusion_and_ig_probability_objective_against_direct_evaluation():
    """On the nonlinear model with the probability objective: occlusion = the drop of p_y computed
    by hand, one position at a time; IG's path is the one documented (midpoint, 1 step)."""
    p = lambda x: np.asarray(jax.nn.softmax(mlp(jnp.asarray(x)), -1))[np.arange(len(x)), Y]
    occ = run("occlusion", mlp, baseline="mean", codebook=CODEBOOK).positions
    for i, j in [(0, 0), (1, 2), (3, 3)]:
        x = E.copy()
        x[:, i, j] = CODEBOOK.mean(0)
        np.testing.assert_allclose(occ[:, i, j], p(E) - p(x), rtol=1e-4, atol=1e-6)
    ig = run("integrated_gradients", mlp, steps=1).channels  # E ⊙ ∇p(E/2)
    g = jax.grad(lambda x: jax.nn.softmax(mlp(x), -1)[jnp.arange(B), Y].sum())(jnp.asarray(E / 2))
    np.testing.assert_allclose(ig, E * np.asarray(g), rtol=1e-4, atol=1e-7)


def test_ig_completeness_error_shrinks_as_steps_grow():
    base = CODEBOOK[2]
    f = lambda x: np.asarray(mlp(jnp.asarray(x)))[np.arange(B), Y]
    gap = f(E) - f(np.broadcast_to(base, E.shape))
    errors = []
    for steps in (1, 4, 16, 64):
        ig = run(
            "integrated_gradients", mlp, objective="logit", steps=steps, baseline=2,
            codebook=CODEBOOK,
        )  # fmt: skip
        errors.append(np.abs(ig.positions.sum((1, 2)) - gap).max())
    assert errors[0] > 1e-2 * np.abs(gap).max()  # one step is far from complete on this model
    assert errors[0] > errors[1] > errors[2] > errors[3], errors
    assert errors[3] < 2e-3 * np.abs(gap).max(), errors


def test_random_does_not_depend_on_the_model_but_on_the_key_and_image_id():
    a = run("random", linear).positions
    b = run("random", other_mlp).positions
    np.testing.assert_array_equal(a, b)
    c = cx.token_attribution(linear, E, Y, jax.random.PRNGKey(2), "random").positions
    assert not np.allclose(a, c)
    # image 1 alone, with its id, draws what it drew in the batch
    one = cx.token_attribution(linear, E[1:2], Y[1], jax.random.PRNGKey(1), "random", image_ids=[1])
    np.testing.assert_array_equal(one.positions[0], a[1])


METHOD_OPTIONS = {
    "smoothgrad": dict(n_samples=2),
    "gradient": {},
    "grad_x_input": {},
    "integrated_gradients": dict(steps=5, baseline="mean", codebook=CODEBOOK),
    "occlusion": dict(baseline=3, codebook=CODEBOOK),
    "random": {},
}


def test_every_method_is_registered_and_tested_here():
    assert set(attribution.method_names()) == set(METHOD_OPTIONS)


@pytest.mark.parametrize("method", list(METHOD_OPTIONS))
def test_batching_and_chunking_never_change_a_result(method):
    opts = METHOD_OPTIONS[method]
    ids = np.array([7, 8, 9])
    whole = run(method, mlp, image_ids=ids, **opts)
    split = run(method, mlp, image_ids=ids, batch=1, **opts)
    np.testing.assert_allclose(split.channels, whole.channels, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(split.positions, whole.positions, rtol=1e-5, atol=1e-7)
    chunk = {
        "smoothgrad": {"samples_per_chunk": 1},
        "integrated_gradients": {"steps_per_chunk": 2},
        "occlusion": {"positions_per_chunk": 5},
    }.get(method)
    if chunk:
        chunked = run(method, mlp, image_ids=ids, **opts, **chunk)
        np.testing.assert_allclose(chunked.positions, whole.positions, rtol=1e-5, atol=1e-7)
    assert whole.channels.shape == E.shape and whole.positions.shape == E.shape[:3]


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])  # chunk loops
def test_the_method_as_one_jitted_function_gives_the_seams_result(method):
    opts = METHOD_OPTIONS[method]
    rng, ids = jax.random.PRNGKey(1), jnp.arange(B)
    fn = jax.jit(attribution.attribution_fn(mlp, rng, method, D, **opts))  # whole: chunks unroll
    channels, positions = fn(jnp.asarray(E), jnp.asarray(Y, jnp.int32), ids)
    want = run(method, mlp, **opts)
    np.testing.assert_allclose(np.asarray(positions), want.positions, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(channels), want.channels, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no option 'steps'"):  # options checked up front
        attribution.attribution_fn(mlp, rng, "gradient", D, steps=3)


def test_smoothgrad_through_the_seam_is_bit_identical_to_tis():
    rng = jax.random.PRNGKey(3)
    want = tis.token_importance(mlp, jnp.asarray(E), jnp.asarray(Y), rng, 2, 0.3, signed=True)
    got = cx.token_attribution(mlp, E, Y, rng, n_samples=2, alpha=0.3, signed=True)
    np.testing.assert_array_equal(got.positions, np.asarray(want))
    tokens = RNG.integers(0, K, (4, M, M))
    labels = np.array([0, 1, 5, 4])
    want_b = tis.token_importance_batched(mlp, CODEBOOK, tokens, labels, rng, 2, batch=2)
    got_b = attribution.attribution_batched(
        mlp, CODEBOOK, tokens, labels, rng, batch=2, n_samples=2
    )
    np.testing.assert_array_equal(got_b, want_b)
    # the batched driver passes its codebook to the methods that take one
    occ = attribution.attribution_batched(
        linear, CODEBOOK, tokens, labels, rng, "occlusion", baseline="mean", objective="logit"
    )
    e = CODEBOOK[tokens]
    want_occ = (W[:, labels].T.reshape(4, M, M, D) * (e - CODEBOOK.mean(0))).sum(-1)
    np.testing.assert_allclose(occ, want_occ, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="lime"), "method='lime'; expected one of smoothgrad, gradient"),
        (dict(method="gradient", steps=3), "gradient has no option 'steps'; it takes objective"),
        (dict(method="random", n_samples=3), "random has no option 'n_samples'; it takes no opt"),
        (dict(n_samples=0), r"n_samples=0; expected an integer ≥ 1"),
        (dict(n_samples=2.5), r"n_samples=2.5; expected an integer ≥ 1"),
        (dict(alpha=-0.1), r"alpha=-0.1; expected a finite number ≥ 0"),
        (dict(alpha=float("nan")), r"alpha=nan; expected a finite number ≥ 0"),
        (dict(signed="yes"), "signed='yes'; expected True or False"),
        (dict(samples_per_chunk=0), r"samples_per_chunk=0; expected an integer ≥ 1"),
        (dict(objective="loss"), "objective='loss'; expected 'probability' or 'logit'"),
        (dict(method="integrated_gradients", steps=0), r"steps=0; expected an integer ≥ 1"),
        (dict(method="integrated_gradients", rule="simpson"), "rule='simpson'; expected one of"),
        (
            dict(method="integrated_gradients", rule="trapezoid", steps=1),
            "steps=1 with rule='trapezoid'; expected at least 2",
        ),
        (dict(method="occlusion", baseline="ones"), "baseline='ones'; expected 'zeros', 'mean'"),
        (dict(method="occlusion", baseline="mean"), "baseline='mean' needs codebook=.K, d."),
        (
            dict(method="occlusion", baseline=K, codebook=CODEBOOK),
            f"baseline token id {K}; expected 0 ≤ id < {K}",
        ),
        (
            dict(method="occlusion", baseline=-1, codebook=CODEBOOK),
            f"baseline token id -1; expected 0 ≤ id < {K}",
        ),
        (
            dict(method="integrated_gradients", baseline=0, codebook=CODEBOOK[:, :3]),
            "codebook rows have 3 channels; E has d = 5",
        ),
        (
            dict(method="occlusion", baseline=0, codebook=CODEBOOK[0]),
            r"codebook has shape \(5,\)",
        ),
        (dict(method="occlusion", positions_per_chunk=0), "positions_per_chunk=0; expected"),
        (dict(batch=0), "batch=0; expected an integer ≥ 1"),
    ],
)
def test_bad_methods_and_options_raise_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        cx.token_attribution(linear, E, Y, jax.random.PRNGKey(0), **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fn", ["token_attribution", "token_importance"])
def test_inputs_are_checked_at_the_boundary(fn):
    call = lambda e, y, **kw: getattr(cx, fn)(linear, e, y, jax.random.PRNGKey(0), **kw)
    bad = E.copy()
    bad[1, 2, 3, 4] = np.nan
    cases = [
        ((E, np.array([0, 6, 1])), f"concept id 6; expected 0 ≤ id < {C}"),  # one past the end
        ((E, np.array([0, -1, 1])), f"concept id -1; expected 0 ≤ id < {C}"),  # not "the last"
        ((E, 6), f"concept id 6; expected 0 ≤ id < {C}"),
        ((E, np.array([0.5, 1, 2])), "expected integer class ids"),
        ((E, np.array([0, 1])), r"concepts has shape \(2,\); expected one class id per image"),
        ((E[0], Y), r"E has shape \(4, 4, 5\); expected \(batch, m, m, d\)"),
        ((E[:, :, :, :0], Y), r"E has shape \(3, 4, 4, 0\)"),
        ((bad, Y), "E has 1 non-finite values; expected finite"),
        ((E.astype(np.int32), Y), "E has dtype int32; expected floating"),
    ]
    for (e, y), message in cases:
        with pytest.raises(ValueError, match=message) as err:
            call(e, y)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"image_ids has shape \(2,\); expected one id per image"):
        call(E, Y, image_ids=[1, 2])
    with pytest.raises(ValueError, match=r"predict returns \(3, 4, 4, 5\) on E of shape"):
        getattr(cx, fn)(lambda x: x, E, Y, jax.random.PRNGKey(0))
    out = call(E, np.array([C - 1, C - 1, 0]))  # the largest valid id passes
    scores = out.positions if fn == "token_attribution" else out
    assert np.isfinite(np.asarray(scores)).all() and np.asarray(scores).any()


def test_no_images_give_empty_results():
    got = cx.token_attribution(linear, E[:0], Y[:0], jax.random.PRNGKey(0), "gradient")
    assert got.channels.shape == (0, M, M, D) and got.positions.shape == (0, M, M)
    none = attribution.attribution_batched(
        linear, CODEBOOK, np.zeros((0, M, M), int), np.zeros(0, int), jax.random.PRNGKey(0)
    )
    assert none.shape == (0, M, M)


def test_batched_functions_check_token_ids_and_labels():
    tokens = RNG.integers(0, K, (4, M, M))
    for fn in (tis.token_importance_batched, attribution.attribution_batched):
        with pytest.raises(ValueError, match=f"token id {K}; expected 0 ≤ id < {K}"):
            fn(linear, CODEBOOK, np.full((2, M, M), K), np.zeros(2, int), jax.random.PRNGKey(0))
        with pytest.raises(ValueError, match=f"concept id {C}; expected 0 ≤ id < {C}"):
            fn(linear, CODEBOOK, tokens, np.array([0, 1, C, 2]), jax.random.PRNGKey(0))
        with pytest.raises(ValueError, match="4 token grids, 3 labels and 4 image ids"):
            fn(linear, CODEBOOK, tokens, np.array([0, 1, 2]), jax.random.PRNGKey(0))


def test_the_sample_level_config_routes_through_the_seam():
    from cortex_jax.experiments import sample_level

    tokens = RNG.integers(0, K, (4, M, M))
    labels = np.array([0, 1, 5, 4])
    ids = np.array([3, 4, 5, 6])
    flat = sample_level.SampleLevelConfig(n_samples=2, batch=2, objective="logit")
    nested = sample_level.SampleLevelConfig(
        batch=2, attribution={"method": "smoothgrad", "n_samples": 2, "objective": "logit"}
    )
    a = sample_level.scores_for(mlp, CODEBOOK, tokens, labels, flat, ids)
    np.testing.assert_array_equal(
        sample_level.scores_for(mlp, CODEBOOK, tokens, labels, nested, ids), a
    )
    occ = sample_level.SampleLevelConfig(
        attribution={"method": "occlusion", "baseline": "mean", "objective": "logit"}
    )
    got = sample_level.scores_for(linear, CODEBOOK, tokens, labels, occ, ids)
    want = (W[:, labels].T.reshape(4, M, M, D) * (CODEBOOK[tokens] - CODEBOOK.mean(0))).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the report's config is what it was before the field existed unless the field is set
    assert "attribution" not in sample_level.config_dict(flat)
    assert sample_level.config_dict(occ)["attribution"]["method"] == "occlusion"
    for bad, message in [
        ({"steps": 3}, "attribution=.*expected a mapping with a 'method' name"),
        ({"method": "lime"}, "method='lime'; expected one of smoothgrad"),
        ({"method": "occlusion", "steps": 3}, "occlusion has no option 'steps'"),
        ({"method": "random", "codebook": CODEBOOK}, "attribution has a 'codebook'"),
    ]:
        with pytest.raises(ValueError, match=message):
            sample_level.SampleLevelConfig(attribution=bad)
    ml_collections = pytest.importorskip("ml_collections")
    from cortex_jax.core.configs import from_section

    section = ml_collections.ConfigDict({"n": 3, "attribution": {"method": "random"}})
    assert from_section(sample_level.SampleLevelConfig, section).attribution == {"method": "random"}
    with pytest.raises(ValueError, match="n_samples=3 next to attribution='gradient'"):
        sample_level.SampleLevelConfig(n_samples=3, attribution={"method": "gradient"})


def test_the_audit_config_takes_an_attribution_too():
    from cortex_jax.experiments import bias

    cfg = bias.AuditConfig(attribution={"method": "integrated_gradients", "steps": 8})
    assert cfg.attribution == {"method": "integrated_gradients", "steps": 8}
    assert bias.AuditConfig().attribution is None
    with pytest.raises(ValueError, match="n_samples=5 next to attribution='gradient'"):
        bias.AuditConfig(n_samples=5, attribution={"method": "gradient"})
    with pytest.raises(ValueError, match="integrated_gradients has no option 'alpha'"):
        bias.AuditConfig(attribution={"method": "integrated_gradients", "alpha": 0.1})
