"""Explain a VQGM you built yourself with cortex-jax: `python docs/own_vqgm.py [OUT]`.

Nothing here is one of cortex-jax's models. "Your" VQGM is a codebook and a small Flax decoder
(stand-ins for a VQGAN you trained); its token grids carry a known signal: images of class c
hold tokens 8c … 8c+7 in their top row, the rest is noise. cortex-jax needs only the codebook and
the decoder (`cx.VQGMLike`), and should find that signal: an IEM learns the classes from E,
TIS points at the top row, T_concept picks the class's own tokens, and codebook-level selection
fills a region with tokens of the target class. The last step runs one of the library's
experiments (`cx.edit`, which writes tokens.json and the decoded progression) on a `cx.Models`
bundle made of the same two callables and the IEM: the orchestration layer does not know, or
need to know, whose model it is.
"""

import sys
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import cortex_jax as cx

K, D, M, CLASSES = 32, 8, 4, 4


class MyDecoder(nn.Module):  # your decoder: E (B, m, m, d) → pixels (B, 4m, 4m, 3)
    @nn.compact
    def __call__(self, e):
        x = nn.ConvTranspose(16, (4, 4), strides=(4, 4))(e)
        return jnp.tanh(nn.Conv(3, (3, 3))(nn.relu(x)))


class MyVQGM:
    """Your model, wrapped: a codebook (K, d) and decode(E) → pixels in [-1, 1]."""

    def __init__(self, seed=0):
        self.codebook = jax.random.normal(jax.random.PRNGKey(seed), (K, D))
        self._dec = MyDecoder()
        self._params = self._dec.init(jax.random.PRNGKey(seed + 1), jnp.zeros((1, M, M, D)))

    def decode(self, e):
        return self._dec.apply(self._params, e)


def my_tokens(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    tokens = rng.integers(0, K, (n, M, M))
    tokens[:, 0, :] = 8 * labels[:, None] + rng.integers(0, 8, (n, M))  # the class signal
    return tokens, labels


def main(out: Path) -> dict:
    model = MyVQGM()
    assert isinstance(model, cx.VQGMLike)
    names = [f"class{c}" for c in range(CLASSES)]
    train = cx.token_dataset(out / "train", *my_tokens(320, 0), names, K)
    val = cx.token_dataset(out / "val", *my_tokens(80, 1), names, K)
    settings = cx.TrainConfig(batch_size=32, epochs=6, learning_rate=3e-3, decay_every=100)
    predict, best = cx.train_iem(model, train, val, out / "iem", train_config=settings)

    tokens, labels = my_tokens(64, 2)
    scores = cx.token_importance(predict, cx.embed(model, tokens), labels, jax.random.PRNGKey(0))
    _, ids = cx.image_tokens(scores, tokens, n=4)
    sets, _ = cx.concept_tokens(ids, labels, CLASSES, K, k=4)
    top_row_share = float(np.mean(np.asarray(scores)[:, 0].sum(1) / np.asarray(scores).sum((1, 2))))
    own = [float(np.isin(sets[c], np.arange(8 * c, 8 * c + 8)).mean()) for c in range(CLASSES)]

    base = tokens[labels == 0][:2]
    search = cx.SelectionConfig(steps=100, log_every=50, learning_rate=0.1)
    region = cx.region_mask(M, "0:1,0:4")  # the top row: where the class signal lives
    res = cx.select_tokens(
        predict, model.codebook, base, region, 3, 0, jax.random.PRNGKey(1), search
    )
    edited = res.edited(base)
    pixels = cx.decode_tokens(model, edited)

    models = cx.models_of(model, names, predict=predict, grid_size=M)  # the experiments' bundle
    start = (base, np.zeros(len(base), np.int64), "0:1,0:4")  # grids, their classes, the region
    info = cx.edit(models, 3, start, cx.EditConfig(search, seed=1), out / "edit")
    return {
        "val_top1": best["val_top1"],
        "tis_share_on_the_signal_row": top_row_share,  # 0.25 if TIS were blind
        "t_concept_share_of_own_tokens": own,
        "selected_tokens_of_the_target": float(np.isin(res.tokens, np.arange(24, 32)).mean()),
        "edited_pixels_shape": list(pixels.shape),
        "edit_f_target": [im["f_target"] for im in info["images"]],
        "edit_files": sorted(p.name for p in (out / "edit").iterdir()),
    }


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    for key, value in main(folder).items():
        print(f"{key}: {value}")
