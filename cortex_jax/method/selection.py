"""Codebook-level explanation: which codebook tokens, placed inside a mask, make the IEM see a
concept (paper Sec. 3.3, appendix A.4), and the embedding-optimisation baseline.

Selection logits P exist for the masked positions only, (M, K) per image (the authors carry all
256 × 16384 with ±300 constants for the unmasked rows): unmasked positions keep their original
codebook rows and never change. Each step draws a hard straight-through Gumbel-Softmax sample
(forward: exactly one-hot; backward: the soft sample's gradient), builds E = one-hot · C inside
the mask, and minimises −f_y(E) + α·mean‖E_mask‖² with Adam; τ is fixed or annealed
geometrically. On accelerators the loop is nested `lax.scan`s under one `jit`; on CPU the same
jitted steps are driven from Python (convolution gradients inside an XLA:CPU while loop ran ~4×
slower). Either way every `log_every` steps the argmax tokens, f_target and f_original of the
hard (argmax) choice are recorded on device. One image is one `vmap` lane, so a batch of images
(each with its own target) runs at once.

The result reports the final step and the best logged step separately (the authors report the
best of 11 checkpoints, which is optimistic).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

Array = jax.Array
Predict = Callable[[Array], Array]


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """Attributes:
    steps: optimisation steps (a multiple of log_every).
    learning_rate: Adam step size (authors: 0.01).
    tau, tau_final: Gumbel-Softmax temperature, annealed geometrically to tau_final if given.
    alpha: weight of the ‖E‖² regulariser (authors: 0).
    objective: "logit" (authors) or "probability".
    init: "random" (N(0, 1) logits, the authors) or "image" (start at the image's own tokens).
    log_every: steps between recorded trajectory points.
    """

    steps: int = 500
    learning_rate: float = 0.01
    tau: float = 1.0
    tau_final: float | None = None
    alpha: float = 0.0
    objective: Literal["probability", "logit"] = "logit"
    init: Literal["random", "image"] = "random"
    log_every: int = 50

    def __post_init__(self):
        if self.steps <= 0 or self.log_every <= 0 or self.steps % self.log_every:
            raise ValueError(
                f"steps={self.steps} must be a positive multiple of log_every={self.log_every}"
            )
        if self.objective not in ("logit", "probability"):
            raise ValueError(f"objective={self.objective!r}; expected 'logit' or 'probability'")
        if self.init not in ("random", "image"):
            raise ValueError(f"init={self.init!r}; expected 'random' or 'image'")


def straight_through_gumbel(logits: Array, rng: Array, tau: float | Array) -> Array:
    """Hard Gumbel-Softmax sample: one-hot forward, soft gradient backward. (..., K)."""
    g = jax.random.gumbel(rng, logits.shape, logits.dtype)
    soft = jax.nn.softmax((logits + g) / tau, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
    return hard + soft - jax.lax.stop_gradient(soft)


def region_mask(grid_size: int, region: str | None = None) -> np.ndarray:
    """(m, m) bool from 'r0:r1,c0:c1' (half-open rows and columns), 'full', or None → the
    centre 4×4 (the authors' rows/cols 7–10 on 16×16)."""
    m = grid_size
    mask = np.zeros((m, m), bool)
    if region is None or region == "center":
        s = max(m // 2 - 1, 0)  # rows/cols 7..10 on 16×16, as the authors
        mask[s : s + 4, s : s + 4] = True
        return mask
    if region == "full":
        return np.ones((m, m), bool)
    try:
        rows, cols = region.split(",")
        r0, r1 = (int(x) for x in rows.split(":"))
        c0, c1 = (int(x) for x in cols.split(":"))
    except ValueError:
        raise ValueError(f"region {region!r} is not 'r0:r1,c0:c1', 'center' or 'full'") from None
    if not (0 <= r0 < r1 <= m and 0 <= c0 < c1 <= m):
        raise ValueError(f"region {region!r} lies outside the {m}x{m} token grid")
    mask[r0:r1, c0:c1] = True
    return mask


@jax.custom_vjp
def _chosen_rows(onehot: Array, codebook: Array) -> Array:
    return codebook[jnp.argmax(onehot, -1)]


def _chosen_rows_fwd(onehot, codebook):
    return _chosen_rows(onehot, codebook), (onehot, codebook)


def _chosen_rows_bwd(res, g):
    onehot, codebook = res
    return g @ codebook.T, onehot.T @ g  # the gradients of onehot @ codebook


_chosen_rows.defvjp(_chosen_rows_fwd, _chosen_rows_bwd)


def embed_selection(
    codebook: Array, base_idx: Array, positions: Array, onehot: Array
) -> tuple[Array, Array]:
    """E (1, m, m, d) of one grid base_idx (m, m) with the masked positions' rows chosen by
    `onehot` (M, K), and those rows (M, d).

    Forward the rows are gathered, so they are exactly codebook rows under any matmul precision
    (a one-hot matmul rounds them under TF32 or bf16, and spreads a non-finite value of any row);
    backward the gradient is that of onehot @ codebook, so the straight-through estimator is
    unchanged.
    """
    rows = _chosen_rows(onehot, codebook)
    e = codebook[base_idx.reshape(-1)].at[positions].set(rows)
    return e.reshape(1, *base_idx.shape, -1), rows


def nearest_rows(rows: Array, codebook: Array, candidates: int = 8) -> Array:
    """Ids (M,) of the nearest codebook row to each of `rows` (M, d), exactly.

    The expansion ‖r‖² + ‖c‖² − 2 r·c, at HIGHEST matmul precision and after subtracting the
    codebook's mean from both (distances do not change; the cancellation does), shortlists
    `candidates` rows; the shortlist is ranked by the directly computed ‖r − c‖²."""
    mu = codebook.mean(0)
    r, c = rows - mu, codebook - mu
    d = (
        (r**2).sum(-1, keepdims=True)
        + (c**2).sum(-1)
        - 2 * jnp.matmul(r, c.T, precision=jax.lax.Precision.HIGHEST)
    )
    _, short = jax.lax.top_k(-d, min(candidates, codebook.shape[0]))  # (M, candidates)
    exact = ((rows[:, None, :] - codebook[short]) ** 2).sum(-1)
    return jnp.take_along_axis(short, jnp.argmin(exact, -1)[:, None], 1)[:, 0]


def _objective(logits: Array, y: Array, objective: str) -> Array:
    if objective == "probability":
        logits = jax.nn.softmax(logits, axis=-1)
    return logits[y]


def _per_image(predict, codebook, cfg: SelectionConfig, positions, m: int):
    """Per-image (init, step, hard_eval) functions shared by the scan and the Python loop."""
    pos = jnp.asarray(positions)  # (M,) flat positions inside the mask
    k = codebook.shape[0]
    tx = optax.adam(cfg.learning_rate)
    decay = (
        1.0 if cfg.tau_final is None else (cfg.tau_final / cfg.tau) ** (1.0 / max(cfg.steps - 1, 1))
    )

    def embed(base_idx, onehot):
        return embed_selection(codebook, base_idx, pos, onehot)

    def init(base_idx, key):
        if cfg.init == "random":
            p0 = jax.random.normal(jax.random.fold_in(key, 1), (pos.shape[0], k))
        else:
            p0 = 10.0 * jax.nn.one_hot(base_idx.reshape(-1)[pos], k)
        return p0, tx.init(p0)

    def step(p, opt, base_idx, target, key, i):
        def loss(p):
            y = straight_through_gumbel(p, jax.random.fold_in(key, i), cfg.tau * decay**i)
            e, rows = embed(base_idx, y)
            f = _objective(predict(e)[0], target, cfg.objective)
            return -f + cfg.alpha * jnp.mean(jnp.sum(rows**2, -1))

        upd, opt = tx.update(jax.grad(loss)(p), opt, p)
        return optax.apply_updates(p, upd), opt

    def hard_eval(p, base_idx, target, source):
        tok = jnp.argmax(p, -1)
        lg = predict(embed(base_idx, jax.nn.one_hot(tok, k))[0])[0]
        return tok, _objective(lg, target, cfg.objective), _objective(lg, source, cfg.objective)

    return init, step, hard_eval


@functools.partial(jax.jit, static_argnames=("predict", "cfg", "positions"))
def _select_scan(predict, codebook, base, targets, sources, keys, cfg: SelectionConfig, positions):
    """The whole optimisation as nested lax.scans under one jit (accelerators)."""
    init, step, hard_eval = _per_image(predict, codebook, cfg, positions, base.shape[1])

    def one(base_idx, target, source, key):
        p0, opt0 = init(base_idx, key)

        def step_fn(carry, i):
            return step(*carry, base_idx, target, key, i), None

        def log_fn(carry, j):
            carry, _ = jax.lax.scan(step_fn, carry, j * cfg.log_every + jnp.arange(cfg.log_every))
            return carry, hard_eval(carry[0], base_idx, target, source)

        _, traj = jax.lax.scan(log_fn, (p0, opt0), jnp.arange(cfg.steps // cfg.log_every))
        return traj, hard_eval(p0, base_idx, target, source)

    return jax.vmap(one)(base, targets, sources, keys)


@functools.partial(jax.jit, static_argnames=("predict", "cfg", "positions", "m", "what"))
def _select_part(predict, codebook, cfg: SelectionConfig, positions, m, what, *args):
    init, step, hard_eval = _per_image(predict, codebook, cfg, positions, m)
    fn = {"init": init, "step": step, "eval": hard_eval}[what]
    in_axes = (0, 0, 0, 0, 0, None) if what == "step" else 0
    return jax.vmap(fn, in_axes=in_axes)(*args)


def step_flops(
    predict: Predict,
    codebook: ArrayLike,
    base_indices: np.ndarray,
    mask: np.ndarray,
    targets: ArrayLike,
    rng: Array,
    cfg: SelectionConfig = SelectionConfig(),
) -> float:
    """XLA's FLOP count of one optimisation step of `select_tokens` over the whole batch of base
    grids (B, m, m) (the jitted step the Python loop runs `cfg.steps` times; the scan runs the
    same step), as compiled for this backend; 0.0 where XLA gives no count. Inputs as for
    `select_tokens` (sources do not enter a step)."""
    base, mask, t, _ = _check(base_indices, mask, codebook, targets, targets)
    positions = tuple(int(p) for p in np.flatnonzero(mask.ravel()))
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(len(base)))
    cb, b = jnp.asarray(codebook), jnp.asarray(base)
    p, opt = _select_part(predict, cb, cfg, positions, b.shape[1], "init", b, keys)
    args = (predict, cb, cfg, positions, b.shape[1], "step", p, opt, b, jnp.asarray(t), keys, 0)
    cost = _select_part.lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else None
    return float(cost.get("flops", 0.0)) if cost else 0.0


def _select_loop(predict, codebook, base, targets, sources, keys, cfg: SelectionConfig, positions):
    """The same steps driven from Python, state and trajectory kept on device (CPU: convolution
    gradients inside an XLA:CPU while loop ran ~4x slower, bench/RESULTS.md)."""
    part = functools.partial(_select_part, predict, codebook, cfg, positions, base.shape[1])
    p, opt = part("init", base, keys)
    start = part("eval", p, base, targets, sources)
    logs = []
    for i in range(cfg.steps):
        p, opt = part("step", p, opt, base, targets, keys, i)
        if (i + 1) % cfg.log_every == 0:
            logs.append(part("eval", p, base, targets, sources))
    traj = tuple(jnp.stack([x[j] for x in logs], axis=1) for j in range(3))
    return traj, start


@dataclasses.dataclass(frozen=True)
class SelectionResult:
    """Attributes (B images, M masked positions, L = steps / log_every logged points):
    positions: (M,) flat masked positions.
    tokens: (B, M) T_codebook at the final step.
    best_tokens: (B, M) at the logged step with the highest f_target.
    start_tokens: (B, M) before optimisation (the argmax of the start logits, or the snapped
      start rows: random tokens for init="random", the image's own for init="image").
    trajectory_tokens: (B, L, M); f_target, f_original: (B, L) at each logged step.
    start_f_target, start_f_original: (B,) before optimisation (tokens of the start logits).
    """

    positions: np.ndarray
    tokens: np.ndarray
    best_tokens: np.ndarray
    start_tokens: np.ndarray
    trajectory_tokens: np.ndarray
    f_target: np.ndarray
    f_original: np.ndarray
    start_f_target: np.ndarray
    start_f_original: np.ndarray

    @classmethod
    def from_trajectory(cls, positions, traj, start) -> SelectionResult:
        """From the logged (tokens, f_target, f_original) and the start's evaluation."""
        toks, ft, fo = (np.asarray(x) for x in traj)
        best = np.argmax(ft, axis=1)
        return cls(
            np.asarray(positions),
            toks[:, -1],
            toks[np.arange(len(toks)), best],
            np.asarray(start[0]),
            toks,
            ft,
            fo,
            np.asarray(start[1]),
            np.asarray(start[2]),
        )

    def edited(
        self, base_indices: np.ndarray, which: Literal["final", "best", "start"] = "final"
    ) -> np.ndarray:
        """The base token grids (B, m, m) with the masked positions replaced by the tokens of
        the final step, the best logged step or the start."""
        chosen = {"final": self.tokens, "best": self.best_tokens, "start": self.start_tokens}
        if which not in chosen:
            raise ValueError(f"which={which!r}; expected 'final', 'best' or 'start'")
        out = np.array(base_indices).reshape(len(base_indices), -1)
        out[:, self.positions] = chosen[which]
        return out.reshape(np.shape(base_indices))


def _check(base_indices, mask, codebook, targets, sources):
    base = np.asarray(base_indices)
    if base.ndim != 3 or base.shape[1] != base.shape[2]:
        raise ValueError(f"base token grids have shape {base.shape}; expected (batch, m, m)")
    mask = np.asarray(mask, bool)
    if mask.shape != base.shape[1:]:
        raise ValueError(f"mask has shape {mask.shape}; expected the {base.shape[1:]} token grid")
    if not mask.any():
        raise ValueError("mask selects no token position")
    k = np.shape(codebook)[0]
    if base.min() < 0 or base.max() >= k:
        raise ValueError(f"base token ids span {base.min()}..{base.max()}; expected 0..{k - 1}")
    b = base.shape[0]
    t = np.broadcast_to(np.asarray(targets, np.int32), (b,))
    s = np.broadcast_to(np.asarray(sources, np.int32), (b,))
    return base.astype(np.int32), mask, t, s


def select_tokens(
    predict: Predict,
    codebook: ArrayLike,
    base_indices: np.ndarray,
    mask: np.ndarray,
    targets: ArrayLike,
    sources: ArrayLike,
    rng: Array,
    cfg: SelectionConfig = SelectionConfig(),
    image_ids: ArrayLike | None = None,
    loop: Literal["auto", "scan", "python"] = "auto",
) -> SelectionResult:
    """Optimises the masked tokens of each base grid (B, m, m) toward its target concept.

    predict: E (1, m, m, d) → logits, pure and hashable (e.g. a functools.partial).
    targets, sources: (B,) or scalar concept ids: the concept to reach and the image's own.
    image_ids: (B,) ids seeding each image's init and Gumbel noise (default 0..B-1), so an
      image's result does not depend on the batch around it.
    loop: "scan" (one jitted program: accelerators), "python" (jitted steps driven from Python:
      faster on CPU), or "auto" (by backend). Both give the same result.
    """
    base, mask, t, s = _check(base_indices, mask, codebook, targets, sources)
    positions = tuple(int(p) for p in np.flatnonzero(mask.ravel()))
    ids = jnp.arange(len(base)) if image_ids is None else jnp.asarray(image_ids, jnp.int32)
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(ids)
    if loop == "auto":
        loop = "python" if jax.default_backend() == "cpu" else "scan"
    if loop not in ("scan", "python"):
        raise ValueError(f"loop={loop!r}; expected 'auto', 'scan' or 'python'")
    run = _select_scan if loop == "scan" else _select_loop
    traj, start = run(
        predict,
        jnp.asarray(codebook),
        jnp.asarray(base),
        jnp.asarray(t),
        jnp.asarray(s),
        keys,
        cfg,
        positions,
    )
    return SelectionResult.from_trajectory(positions, traj, start)


@functools.partial(jax.jit, static_argnames=("predict", "cfg", "positions"))
def _embed_opt(predict, codebook, base, targets, sources, cfg: SelectionConfig, positions):
    pos = jnp.asarray(positions)
    m = base.shape[1]
    tx = optax.adam(cfg.learning_rate)
    n_log = cfg.steps // cfg.log_every

    def snap(rows):
        return nearest_rows(rows, codebook)

    def one(base_idx, target, source):
        e_base = codebook[base_idx.reshape(-1)]
        r0 = e_base[pos]

        def f_of(rows, y):
            e = e_base.at[pos].set(rows).reshape(1, m, m, -1)
            return _objective(predict(e)[0], y, cfg.objective)

        def loss(rows):
            return -f_of(rows, target) + cfg.alpha * jnp.mean(jnp.sum(rows**2, -1))

        def hard_eval(rows):
            tok = snap(rows)
            return tok, f_of(codebook[tok], target), f_of(codebook[tok], source)

        def step_fn(carry, _):
            rows, opt = carry
            upd, opt = tx.update(jax.grad(loss)(rows), opt, rows)
            return (optax.apply_updates(rows, upd), opt), None

        def log_fn(carry, _):
            carry, _ = jax.lax.scan(step_fn, carry, None, length=cfg.log_every)
            return carry, hard_eval(carry[0])

        _, traj = jax.lax.scan(log_fn, (r0, tx.init(r0)), None, length=n_log)
        return traj, hard_eval(r0)

    return jax.vmap(one)(base, targets, sources)


def optimize_embedding(
    predict: Predict,
    codebook: ArrayLike,
    base_indices: np.ndarray,
    mask: np.ndarray,
    targets: ArrayLike,
    sources: ArrayLike,
    cfg: SelectionConfig = SelectionConfig(),
) -> SelectionResult:
    """The baseline: Adam on the masked rows of E itself (same loss and budget), snapped to the
    nearest codebook rows at every logged step and at the end."""
    base, mask, t, s = _check(base_indices, mask, codebook, targets, sources)
    positions = tuple(int(p) for p in np.flatnonzero(mask.ravel()))
    traj, start = _embed_opt(
        predict,
        jnp.asarray(codebook),
        jnp.asarray(base),
        jnp.asarray(t),
        jnp.asarray(s),
        cfg,
        positions,
    )
    return SelectionResult.from_trajectory(positions, traj, start)
