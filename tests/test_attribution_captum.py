"""Our attribution methods against Captum's on one tiny nonlinear IEM written in both JAX and
torch with the same weights: integrated gradients (same Riemann rule, steps and baseline),
occlusion (FeatureAblation with one feature group per token position and the same baseline
row), the gradient (Saliency, abs=False) and grad×input (InputXGradient).

Needs torch and captum (the `conformance` extra); skips with a message otherwise.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="conformance extra not installed (needs torch)")
captum_attr = pytest.importorskip(
    "captum.attr", reason="conformance extra not installed (needs captum)"
)

import cortex_jax as cx  # noqa: E402

B, M, D, H, C, K = 3, 3, 4, 6, 5, 7
_rng = np.random.default_rng(11)
W1 = (_rng.standard_normal((D, H)) / 2).astype(np.float32)
B1 = (_rng.standard_normal(H) / 4).astype(np.float32)
W2 = (_rng.standard_normal((M * M * H, C)) / 3).astype(np.float32)
B2 = (_rng.standard_normal(C) / 4).astype(np.float32)
CODEBOOK = _rng.standard_normal((K, D)).astype(np.float32)
E = CODEBOOK[_rng.integers(0, K, (B, M, M))] + 0.1 * _rng.standard_normal((B, M, M, D)).astype(
    np.float32
)
Y = np.array([1, 4, 0])


def _jax_iem(x, w1, b1, w2, b2):
    """A per-position MLP layer (tanh) and a linear read-out over all positions."""
    h = jnp.tanh(x @ w1 + b1)
    return h.reshape(x.shape[0], -1) @ w2 + b2


jax_iem = functools.partial(
    _jax_iem, w1=jnp.asarray(W1), b1=jnp.asarray(B1), w2=jnp.asarray(W2), b2=jnp.asarray(B2)
)


class TorchIEM(torch.nn.Module):
    def __init__(self, objective: str):
        super().__init__()
        self.objective = objective
        self.w1, self.b1 = torch.from_numpy(W1), torch.from_numpy(B1)
        self.w2, self.b2 = torch.from_numpy(W2), torch.from_numpy(B2)

    def forward(self, x):
        h = torch.tanh(x @ self.w1 + self.b1)
        logits = h.reshape(x.shape[0], -1) @ self.w2 + self.b2
        return torch.softmax(logits, -1) if self.objective == "probability" else logits


BASELINE_ROWS = {"zeros": np.zeros(D, np.float32), "mean": CODEBOOK.mean(0), 3: CODEBOOK[3]}
CAPTUM_RULE = {"midpoint": "riemann_middle", "left": "riemann_left", "right": "riemann_right"}


def _ours(method, **options):
    return cx.token_attribution(jax_iem, E, Y, jax.random.PRNGKey(0), method, **options)


def _baseline_tensor(baseline):
    return torch.from_numpy(np.broadcast_to(BASELINE_ROWS[baseline], (1, M, M, D)).copy())


def test_the_two_models_agree():
    got = np.asarray(jax_iem(jnp.asarray(E)))
    np.testing.assert_allclose(got, TorchIEM("logit")(torch.from_numpy(E)).detach(), rtol=1e-5)


@pytest.mark.parametrize(
    "rule, baseline, objective",
    [("midpoint", "zeros", "probability"), ("right", "mean", "logit"), ("left", 3, "probability")],
)
def test_integrated_gradients_equals_captums(rule, baseline, objective):
    steps = 7
    ours = _ours(
        "integrated_gradients",
        steps=steps,
        rule=rule,
        baseline=baseline,
        codebook=CODEBOOK,
        objective=objective,
    )
    ig = captum_attr.IntegratedGradients(TorchIEM(objective))
    want = ig.attribute(
        torch.from_numpy(E),
        baselines=_baseline_tensor(baseline),
        target=torch.from_numpy(Y),
        n_steps=steps,
        method=CAPTUM_RULE[rule],
    )
    want = want.detach().numpy()
    scale = np.abs(want).max()
    np.testing.assert_allclose(ours.channels, want, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(ours.positions, want.sum(-1), rtol=1e-4, atol=1e-5 * scale)
    # a different rule is told apart: the comparison can fail
    other = next(r for r in CAPTUM_RULE if r != rule)
    wrong = ig.attribute(
        torch.from_numpy(E),
        baselines=_baseline_tensor(baseline),
        target=torch.from_numpy(Y),
        n_steps=steps,
        method=CAPTUM_RULE[other],
    )
    assert np.abs(wrong.detach().numpy() - want).max() > 100 * 1e-5 * scale


@pytest.mark.parametrize(
    "baseline, objective", [("zeros", "probability"), ("mean", "logit"), (3, "probability")]
)
def test_occlusion_equals_captums_feature_ablation_per_position(baseline, objective):
    ours = _ours("occlusion", baseline=baseline, codebook=CODEBOOK, objective=objective)
    mask = torch.arange(M * M).reshape(1, M, M, 1).expand(1, M, M, D)  # one group a position
    want = (
        captum_attr.FeatureAblation(TorchIEM(objective))
        .attribute(
            torch.from_numpy(E),
            baselines=_baseline_tensor(baseline),
            target=torch.from_numpy(Y),
            feature_mask=mask,
        )
        .detach()
        .numpy()
    )
    scale = np.abs(want).max()
    np.testing.assert_allclose(ours.channels, want, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(ours.positions, want[..., 0], rtol=1e-4, atol=1e-5 * scale)


def test_gradient_and_grad_x_input_equal_captums():
    model = TorchIEM("probability")
    x, y = torch.from_numpy(E).requires_grad_(), torch.from_numpy(Y)
    sal = captum_attr.Saliency(model).attribute(x, target=y, abs=False).detach().numpy()
    gxi = captum_attr.InputXGradient(model).attribute(x, target=y).detach().numpy()
    np.testing.assert_allclose(_ours("gradient").channels, sal, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_ours("grad_x_input").channels, gxi, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_ours("grad_x_input").positions, gxi.sum(-1), rtol=1e-4, atol=1e-6)


def test_trapezoid_is_captums_rescaled_to_weights_summing_to_one():
    """Same points (linspace(0, 1, n)); Captum weights them 1/n (ends halved, Σ = 1 − 1/n), we
    1/(n − 1) (Σ = 1), so ours = Captum's · n/(n − 1) exactly, and only ours is complete."""
    steps = 5
    ours = _ours("integrated_gradients", steps=steps, rule="trapezoid", objective="logit")
    want = (
        captum_attr.IntegratedGradients(TorchIEM("logit"))
        .attribute(
            torch.from_numpy(E),
            baselines=_baseline_tensor("zeros"),
            target=torch.from_numpy(Y),
            n_steps=steps,
            method="riemann_trapezoid",
        )
        .detach()
        .numpy()
    )
    scale = np.abs(want).max()
    np.testing.assert_allclose(ours.channels, want * steps / (steps - 1), atol=1e-5 * scale)
