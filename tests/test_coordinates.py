"""One coordinate convention, end to end: token position p = row·m + col, row from the image's
y (top to bottom) and col from its x. An object is rendered at a known, asymmetric place (low
in the image, to the left), and every stage that names a position must agree with it: the
ground-truth mask, the VQGAN's token ids, T_image positions, the masking evaluation's black
patches and the red boxes of the figures."""

import jax.numpy as jnp
import numpy as np

from cortex_jax.io.images import grid_image
from cortex_jax.method import evaluate, tis
from cortex_jax.toy import load_toy_vqgm, world

CX, CY = 7.0, 23.0  # x (column) 7, y (row) 23 of 32: token row 5, column 1 on the 8×8 grid


def _images():
    scene = world.Scene("blue-circle", "sand", CX, CY, 5.5, 0.0)
    with_object, cov = world.draw(scene, np.random.default_rng(0))
    rng = np.random.default_rng(0)  # the same texture and noise draws, without the object
    bg = world.background("sand", rng)
    bare = np.clip(bg + 0.02 * rng.standard_normal(bg.shape).astype(np.float32), 0, 1)
    return with_object * 2 - 1, bare * 2 - 1, cov


def _dilate(mask):
    out = mask.copy()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            out |= np.roll(np.roll(mask, dr, 0), dc, 1)
    return out


def test_every_stage_agrees_on_row_and_column():
    obj, bare, cov = _images()
    m, patch = 8, world.PATCH
    truth = world.token_mask(cov[None])[0]  # (8, 8)
    rows, cols = np.nonzero(truth)
    assert rows.min() >= 4 and cols.max() <= 3  # low and left: rows from y, columns from x
    assert abs(rows.mean() - CY / patch + 0.5) < 0.75 and abs(cols.mean() - CX / patch + 0.5) < 0.75

    # The VQGAN: the encoder's latents change most at the object's positions (its mid-block
    # attention moves every latent a little), and id p = row·m + col is the nearest codebook
    # row of the latent at (row, col).
    vq = load_toy_vqgm().vqgan
    z = np.asarray(vq.encode_latents(np.stack([obj, bare])))  # (2, m, m, d)
    change = np.linalg.norm(z[0] - z[1], axis=-1) / np.linalg.norm(z[1], axis=-1)
    top = np.zeros(m * m, bool)
    top[np.argsort(-change.ravel())[: truth.sum()]] = True
    top = top.reshape(m, m)
    assert (top & _dilate(truth)).sum() >= 0.8 * top.sum()
    assert truth[np.unravel_index(change.argmax(), change.shape)]
    assert not (top & truth.T & ~_dilate(truth)).any()  # the transposed place is not among them
    ids = np.asarray(vq.encode(np.stack([obj, bare]))).reshape(2, m, m)
    cb = np.asarray(vq.codebook, np.float64)
    nearest = ((z[0][..., None, :] - cb) ** 2).sum(-1).argmin(-1)
    assert (nearest == ids[0]).mean() >= 0.98  # float32 ties aside, the same ids in place

    # T_image: a score map peaking at the object's positions returns those flat positions.
    scores = np.where(truth, 1.0 + np.arange(m * m).reshape(m, m) / 100, 0.0)[None]
    pos, tok = tis.image_tokens(jnp.asarray(scores), jnp.asarray(ids[:1]), int(truth.sum()))
    np.testing.assert_array_equal(np.sort(np.asarray(pos[0])), np.flatnonzero(truth))
    np.testing.assert_array_equal(np.asarray(tok[0]), ids[0].reshape(-1)[np.asarray(pos[0])])
    np.testing.assert_array_equal(evaluate.positions_mask(np.asarray(pos), m)[0], truth)

    # Masking: the black patches are the object's pixels, not their transpose.
    blacked = evaluate.black_out(obj[None], truth[None])[0]
    black = (blacked == -1).all(-1)
    np.testing.assert_array_equal(black, np.kron(truth, np.ones((patch, patch), bool)))
    assert black[int(CY), int(CX)] and not black[int(CX), int(CY)]

    # Figures: the red boxes frame the same patches.
    img = np.asarray(grid_image(obj[None], 1, boxes=truth[None], pad=0))
    red = (img == (255, 0, 0)).all(-1)
    for r, c in zip(rows, cols, strict=True):
        assert red[r * patch, c * patch] and red[r * patch + patch - 1, c * patch + patch - 1]
    assert not red[~np.kron(_dilate(truth), np.ones((patch, patch), bool))].any()
