"""Token attributions behind one seam: every method maps (predict, E (B, m, m, d), concepts, one
PRNG key per image, options) to per-channel attributions (B, m, m, d) and a per-position score
(B, m, m), and every method runs through the one batched, data-parallel driver of TIS
(`tis.over_images`): `batch` images at a time, split over this host's devices, image i keyed by
fold_in(rng, image_id_i), so batching and sharding never change a result.

The objective f_y is the concept's probability (default, the paper's) or its logit
(`objective="logit"`), for every method. Methods, by name (`METHODS`), and their per-position
reduction:

- `smoothgrad` — the paper's TIS (`tis.token_importance`, bit-identical): channels = S, the mean
  over `n_samples` noisy copies of ∇_E f_y with σ = α·(max E − min E) per image; positions =
  max over channels of |S| (eq. 4; `signed=True`: max of S). Options n_samples=20, alpha=0.2,
  objective, signed=False, samples_per_chunk=None (all).
- `gradient` — channels = ∇_E f_y at E; positions = max over channels of |·| (SmoothGrad with
  α = 0 and one copy). Option objective.
- `grad_x_input` — channels = E ⊙ ∇_E f_y; positions = the signed channel sum (for a model linear
  in E the positions sum to f(E) − f(0)). Option objective.
- `integrated_gradients` — channels = (E − E') ⊙ Σ_k w_k ∇f_y(E' + a_k (E − E')) with a Riemann
  rule over `steps` points: `rule="midpoint"` (default; Captum's riemann_middle)
  a_k = (k + ½)/steps, w_k = 1/steps; "left" a_k = k/steps and "right" a_k = (k + 1)/steps (as
  Captum's); "trapezoid" a_k = k/(steps − 1), w_k = 1/(steps − 1) halved at both ends
  (steps ≥ 2; Captum's weights are 1/steps, which do not sum to 1). positions = the signed
  channel sum, so Σ over positions ≈ f(E) − f(E') (completeness; exact for a model linear in E
  with any rule but Captum's trapezoid). Options objective, steps=32, rule, baseline,
  codebook, steps_per_chunk=None (all).
- `occlusion` — each position p in turn replaced by the baseline row, all positions of a chunk
  in one batched pass (`positions_per_chunk`, default all m·m): positions = f_y(E) −
  f_y(E with p occluded), the drop of the objective; channels = that drop on every channel of p
  (Captum's FeatureAblation convention for a feature group). Options objective, baseline,
  codebook, positions_per_chunk=None (on a 2-core CPU 8 a pass ran at 80-85 % of the matmul
  peak, all 256 at 63 %: bench/RESULTS.md; the scores do not depend on it, up to rounding).
- `random` — a model-free reference: channels ~ N(0, 1) drawn from the image's key; positions =
  max over channels of |·|. No options.

Baselines E' (IG, occlusion): `baseline="zeros"` (default), `"mean"` (the mean codebook row) or
an int token id (that id's codebook row), on every position; the last two need `codebook`
(K, d) as an option, since the method layer reads no files.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cortex_jax.method import tis

Array = jax.Array
Predict = Callable[[Array], Array]  # E (B, m, m, d) → logits (B, classes)
Options = Mapping[str, Any]


class Attribution(NamedTuple):
    """channels (B, m, m, d) per-channel attributions; positions (B, m, m) per-position score
    (the method's reduction, see the module docstring). Host float32 arrays."""

    channels: np.ndarray
    positions: np.ndarray


# (predict, E float32 (B, m, m, d), concepts int32 (B,), keys (B,) per-image PRNG keys, checked
# options with defaults filled) → (channels (B, m, m, d), positions (B, m, m))
MethodFn = Callable[[Predict, Array, Array, Array, Options], tuple[Array, Array]]


def _f(predict: Predict, x: Array, y: Array, objective: str) -> Array:
    """f_y per row (n,): the concept's probability or logit."""
    out = predict(x)
    if objective == "probability":
        out = jax.nn.softmax(out, axis=-1)
    return jnp.take_along_axis(out, y[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnames=("predict", "objective"))
def _grad(predict, x, y, objective):
    return jax.grad(lambda z: _f(predict, z, y, objective).sum())(x)


@functools.partial(jax.jit, static_argnames=("predict", "objective"))
def _ig_chunk(predict, x, base, y, alphas, weights, objective):
    """Σ_k w_k ∇f_y(E' + a_k (E − E')) over one chunk of k path points (B, m, m, d)."""
    b, k = x.shape[0], alphas.shape[0]
    path = base[:, None] + alphas[None, :, None, None, None] * (x - base)[:, None]
    g = _grad(predict, path.reshape(b * k, *x.shape[1:]), jnp.repeat(y, k), objective)
    return (g.reshape(b, k, *x.shape[1:]) * weights[None, :, None, None, None]).sum(axis=1)


@functools.partial(jax.jit, static_argnames=("predict", "objective"))
def _occluded(predict, x, base, y, positions, objective):
    """f_y (B, P) with flat position positions[j] of every image replaced by the baseline (an
    index ≥ m·m occludes nothing)."""
    b, m1, m2, d = x.shape
    p = positions.shape[0]
    hit = (jnp.arange(m1 * m2)[None, :] == positions[:, None]).reshape(1, p, m1, m2, 1)
    xo = jnp.where(hit, base[:, None], x[:, None])
    return _f(predict, xo.reshape(b * p, m1, m2, d), jnp.repeat(y, p), objective).reshape(b, p)


def _smoothgrad(predict, x, y, keys, o):
    chunk = min(o["samples_per_chunk"] or o["n_samples"], o["n_samples"])
    s = tis.smoothgrad_sum(
        predict, x, y, keys, o["n_samples"], float(o["alpha"]), o["objective"], chunk
    )
    return s, (s if o["signed"] else jnp.abs(s)).max(axis=-1)


def _gradient(predict, x, y, keys, o):
    g = _grad(predict, x, y, o["objective"])
    return g, jnp.abs(g).max(axis=-1)


def _grad_x_input(predict, x, y, keys, o):
    a = x * _grad(predict, x, y, o["objective"])
    return a, a.sum(axis=-1)


RULES = ("midpoint", "left", "right", "trapezoid")


def riemann(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Path points a_k and weights w_k (float64) of a Riemann rule: left, right and midpoint as
    Captum's riemann_*; trapezoid on points k/(steps − 1) with weights 1/(steps − 1), halved at
    both ends, so they sum to 1 (Captum's riemann_trapezoid weights 1/steps, summing to
    1 − 1/steps, so it is not complete even for a linear model)."""
    k = np.arange(steps, dtype=np.float64)
    w = np.full(steps, 1.0 / steps)
    if rule == "trapezoid":  # spacing 1/(steps − 1): the weights sum to 1 (Captum's to 1 − 1/n)
        w = np.full(steps, 1.0 / (steps - 1))
        w[0] /= 2
        w[-1] /= 2
        return k / (steps - 1), w
    shift = {"left": 0.0, "midpoint": 0.5, "right": 1.0}[rule]
    return (k + shift) / steps, w


def _baseline(x: Array, o: Options) -> Array:
    return jnp.broadcast_to(o["baseline_row"], x.shape)


def _integrated_gradients(predict, x, y, keys, o):
    base = _baseline(x, o)
    alphas, weights = riemann(o["rule"], o["steps"])
    chunk = min(o["steps_per_chunk"] or o["steps"], o["steps"])
    pad = (-o["steps"]) % chunk
    alphas = np.concatenate([alphas, np.zeros(pad)]).astype(np.float32)
    weights = np.concatenate([weights, np.zeros(pad)]).astype(np.float32)  # padded: weight 0
    total = jnp.zeros_like(x)
    for i in range(0, len(alphas), chunk):
        a, w = jnp.asarray(alphas[i : i + chunk]), jnp.asarray(weights[i : i + chunk])
        total = total + _ig_chunk(predict, x, base, y, a, w, o["objective"])
    ig = (x - base) * total
    return ig, ig.sum(axis=-1)


def _occlusion(predict, x, y, keys, o):
    b, m1, m2, d = x.shape
    n = m1 * m2
    base = _baseline(x, o)
    chunk = min(o["positions_per_chunk"] or n, n)
    full = _f(predict, x, y, o["objective"])
    drops = []
    for i in range(0, n, chunk):
        pos = jnp.arange(i, i + chunk)  # past m·m: occludes nothing, sliced off below
        drops.append(full[:, None] - _occluded(predict, x, base, y, pos, o["objective"]))
    score = jnp.concatenate(drops, axis=1)[:, :n].reshape(b, m1, m2)
    return jnp.broadcast_to(score[..., None], x.shape), score


@functools.partial(jax.jit, static_argnames=("shape",))
def _normal_per_image(keys, shape):
    return jax.vmap(lambda k: jax.random.normal(k, shape))(keys)


def _random(predict, x, y, keys, o):
    r = _normal_per_image(keys, x.shape[1:])
    return r, jnp.abs(r).max(axis=-1)


# ---- options: defaults and range checks -------------------------------------------------------


def _int_at_least(lo: int) -> Callable[[str, Any], None]:
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}={v!r}; expected an integer ≥ {lo}")

    return check


def _chunk(name, v):
    if v is not None:
        _int_at_least(1)(name, v)


def _objective(name, v):
    tis.check_objective(v)


def _alpha(name, v):
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    if not ok or not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name}={v!r}; expected a finite number ≥ 0 (σ = α·(max E − min E))")


def _bool(name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name}={v!r}; expected True or False")


def _rule(name, v):
    if v not in RULES:
        raise ValueError(f"{name}={v!r}; expected one of {', '.join(map(repr, RULES))}")


def _baseline_option(name, v):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return
    if v not in ("zeros", "mean"):
        raise ValueError(f"{name}={v!r}; expected 'zeros', 'mean' or a token id (int)")


def _codebook(name, v):
    if v is None:
        return
    cb = np.asarray(v)
    if cb.ndim != 2 or 0 in cb.shape or not np.issubdtype(cb.dtype, np.floating):
        raise ValueError(f"{name} has shape {cb.shape} ({cb.dtype}); expected float rows (K, d)")
    if not np.isfinite(cb).all():
        raise ValueError(f"{name} has non-finite values; expected a finite codebook")


@dataclasses.dataclass(frozen=True)
class Method:
    """One attribution method: its function, its options' defaults and their checks."""

    fn: MethodFn
    defaults: Mapping[str, Any]
    checks: Mapping[str, Callable[[str, Any], None]]


_BASE_OPTIONS = {"baseline": "zeros", "codebook": None}
_BASE_CHECKS = {"baseline": _baseline_option, "codebook": _codebook}

METHODS: dict[str, Method] = {
    "smoothgrad": Method(
        _smoothgrad,
        {
            "n_samples": 20,
            "alpha": 0.2,
            "objective": "probability",
            "signed": False,
            "samples_per_chunk": None,
        },
        {
            "n_samples": _int_at_least(1),
            "alpha": _alpha,
            "objective": _objective,
            "signed": _bool,
            "samples_per_chunk": _chunk,
        },
    ),
    "gradient": Method(_gradient, {"objective": "probability"}, {"objective": _objective}),
    "grad_x_input": Method(_grad_x_input, {"objective": "probability"}, {"objective": _objective}),
    "integrated_gradients": Method(
        _integrated_gradients,
        {"objective": "probability", "steps": 32, "rule": "midpoint", **_BASE_OPTIONS}
        | {"steps_per_chunk": None},
        {"objective": _objective, "steps": _int_at_least(1), "rule": _rule, **_BASE_CHECKS}
        | {"steps_per_chunk": _chunk},
    ),
    "occlusion": Method(
        _occlusion,
        {"objective": "probability", **_BASE_OPTIONS, "positions_per_chunk": None},
        {"objective": _objective, **_BASE_CHECKS, "positions_per_chunk": _chunk},
    ),
    "random": Method(_random, {}, {}),
}


def method_names() -> tuple[str, ...]:
    """The registered method names."""
    return tuple(METHODS)


def check_options(method: str, options: Options) -> tuple[Method, dict[str, Any]]:
    """The method registered under `method` and its options with defaults filled, checked
    without E: one-line ValueError for an unknown method, an unknown option (naming those the
    method takes) or an option out of range."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r}; expected one of {', '.join(METHODS)}")
    spec = METHODS[method]
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        takes = ", ".join(spec.defaults) or "no options"
        raise ValueError(f"{method} has no option {unknown[0]!r}; it takes {takes}")
    o = {**spec.defaults, **options}
    for name, check in spec.checks.items():
        check(name, o[name])
    if "rule" in o and o["rule"] == "trapezoid" and o["steps"] < 2:
        raise ValueError(f"steps={o['steps']} with rule='trapezoid'; expected at least 2")
    return spec, o


def config_spec(value: Any) -> dict[str, Any]:
    """An experiment config's `attribution` value as a checked plain dict {"method": name,
    **options} (a mapping, or an ml_collections section). The experiment supplies the codebook,
    so a `codebook` option is refused. One-line ValueError otherwise."""
    spec = value.to_dict() if hasattr(value, "to_dict") else value
    if not isinstance(spec, Mapping) or not isinstance(spec.get("method"), str):
        shown = dict(spec) if isinstance(spec, Mapping) else spec
        raise ValueError(
            f"attribution={shown!r}; expected a mapping with a 'method' name and its options"
        )
    spec = dict(spec)
    options = {k: v for k, v in spec.items() if k != "method"}
    if "codebook" in options:
        raise ValueError("attribution has a 'codebook'; the bundle's codebook is used")
    check_options(spec["method"], options)
    return spec


def resolve(method: str, options: Options, d: int) -> tuple[Method, dict[str, Any]]:
    """The method registered under `method` and its options with defaults filled, checked for
    E's channel count d (and a baseline row computed where the method takes one). One-line
    ValueError for an unknown method, an unknown option (naming those the method takes) or an
    option out of range."""
    spec, o = check_options(method, options)
    if "baseline" in o:
        o["baseline_row"] = _baseline_row(o["baseline"], o["codebook"], d)
    return spec, o


def _baseline_row(baseline: Any, codebook: ArrayLike | None, d: int) -> Array:
    if isinstance(baseline, str) and baseline == "zeros":
        return jnp.zeros((d,), jnp.float32)
    if codebook is None:
        raise ValueError(f"baseline={baseline!r} needs codebook=(K, d) rows; none was given")
    cb = jnp.asarray(codebook, jnp.float32)
    if cb.shape[1] != d:
        raise ValueError(f"codebook rows have {cb.shape[1]} channels; E has d = {d}")
    if isinstance(baseline, str):  # "mean"
        return cb.mean(axis=0)
    if not 0 <= int(baseline) < cb.shape[0]:
        raise ValueError(f"baseline token id {int(baseline)}; expected 0 ≤ id < {cb.shape[0]}")
    return cb[int(baseline)]


_image_keys = jax.jit(tis.image_keys)  # integer ops: the same keys as tis computes eagerly


def _scorer(predict: Predict, rng: Array, spec: Method, o: dict[str, Any]):
    def score(e, y, g):
        x = jnp.asarray(e, jnp.float32)
        return spec.fn(predict, x, y, _image_keys(rng, g), o)

    return score


def attribution_fn(
    predict: Predict, rng: Array, method: str = "smoothgrad", d: int = 256, **options: Any
) -> Callable[[Array, Array, Array], tuple[Array, Array]]:
    """`method` as one pure function (E (B, m, m, d) float32, concepts (B,) int32, image_ids
    (B,)) → (channels, positions) on device, its options checked (as `resolve`, for d channels)
    once here and its inputs not at all: what `token_attribution` runs per batch, and jittable
    whole (chunk loops unroll), e.g. for XLA's FLOP count of a call (bench/tis.py)."""
    spec, o = resolve(method, options, d)
    return _scorer(predict, rng, spec, o)


def token_attribution(
    predict: Predict,
    embeddings: ArrayLike,
    concepts: ArrayLike,
    rng: Array,
    method: str = "smoothgrad",
    *,
    image_ids: ArrayLike | None = None,
    batch: int | None = None,
    **options: Any,
) -> Attribution:
    """Attributions of each image's token embeddings for its concept, by `method`.

    Args:
      predict: E (n, m, m, d) → logits; pure, differentiable, hashable (as for TIS).
      embeddings: E (B, m, m, d), finite.
      concepts: a class id per image (B,) or one for all; 0 ≤ id < predict's classes.
      rng: base PRNG key; image i draws from fold_in(rng, image_ids[i]).
      method: one of `method_names()` (module docstring: what each computes and reduces).
      image_ids: (B,) (default 0..B−1); pass global ids to make draws independent of batching.
      batch: images per pass (default all B), each pass split over this host's devices.
      options: the method's options (module docstring), e.g. n_samples=20 for smoothgrad,
        steps=64, baseline="mean", codebook=vq.codebook for integrated_gradients.

    Returns Attribution(channels (B, m, m, d), positions (B, m, m)), host float32 arrays. With
    method="smoothgrad", positions equal `tis.token_importance` with the same options. Raises a
    one-line ValueError for an unknown method or option, an option out of range, a class id
    outside predict's classes, E not (B, m, m, d) or not finite, concepts or image_ids not one
    per image.
    """
    e = tis.check_embeddings(embeddings)
    b = e.shape[0]
    spec, o = resolve(method, options, e.shape[-1])
    y = np.asarray(tis.check_concepts(concepts, b, tis.n_classes_of(predict, e.shape)))
    ids = np.asarray(tis.check_image_ids(image_ids, b))
    if b == 0:
        return Attribution(np.zeros(e.shape, np.float32), np.zeros(e.shape[:3], np.float32))
    channels, positions = tis.over_images(
        _scorer(predict, rng, spec, o),
        np.asarray(e, np.float32),
        y,
        ids,
        max(b, 1) if batch is None else batch,
    )
    return Attribution(channels, positions)


def attribution_batched(
    predict: Predict,
    codebook: ArrayLike,
    tokens: np.ndarray,
    labels: np.ndarray,
    rng: Array,
    method: str = "smoothgrad",
    *,
    batch: int = 128,
    image_ids: np.ndarray | None = None,
    **options: Any,
) -> np.ndarray:
    """Per-position scores (N, m, m) float32 of token grids (N, m, m) with labels (N,) by
    `method`, `batch` grids at a time on the one batched driver (`tis.over_images`); E = the
    codebook rows. `codebook` also serves as the method's `codebook` option unless one is given.
    With method="smoothgrad" the scores equal `tis.token_importance_batched` bit for bit."""
    ids = np.arange(len(tokens)) if image_ids is None else np.asarray(image_ids)
    cb, tokens, labels, ids = tis.check_tokens(codebook, tokens, labels, ids)
    if method in METHODS and "codebook" in METHODS[method].defaults:
        options = {"codebook": cb, **options}
    spec, o = resolve(method, options, cb.shape[1])
    if not len(tokens):
        return np.zeros((0, *tokens.shape[1:]), np.float32)
    shape = (min(batch, len(tokens)), *tokens.shape[1:], cb.shape[1])
    labels = np.asarray(tis.check_concepts(labels, len(tokens), tis.n_classes_of(predict, shape)))
    score = _scorer(predict, rng, spec, o)
    return tis.over_images(
        lambda e, y, g: score(e, y, g)[1:], tokens, labels, ids, batch, embed=lambda t: cb[t]
    )[0]
