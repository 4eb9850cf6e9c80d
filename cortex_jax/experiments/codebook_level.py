"""Codebook-level experiments built on `selection`: decoded edit progressions and the paper's
Table 5 design (each image's region optimised toward a partner concept, token selection vs
embedding optimisation, judged by the IEM and by an independent classifier on decoded pixels).

The paper's comparison is confounded by its start point: token selection starts from random
tokens in the region (the authors' N(0, 1) logits) while the embedding baseline starts from the
image's own rows. `pair_study` therefore also reports the controls that separate start from
optimisation: random tokens with no optimisation (`random_tokens/start`), and token selection
started from the image's own tokens (`token_selection_from_image`). The like-for-like comparison
is `token_selection_from_image` against `embedding_optimisation`: same start, loss, steps and
step size; `token_selection` against `random_tokens/start` is what optimising adds to the
authors' random start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from cortex_jax.method import selection

Decode = Callable[[np.ndarray], np.ndarray]
Editor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def progression(decode: Decode, base: np.ndarray, result: selection.SelectionResult, i: int = 0):
    """Decoded images of image i: the original, then every logged step, (L + 1, H, W, 3)."""
    grids = [base[i]]
    flat = base[i].reshape(-1)
    for toks in result.trajectory_tokens[i]:
        g = flat.copy()
        g[result.positions] = toks
        grids.append(g.reshape(base[i].shape))
    return np.asarray(decode(np.stack(grids)))


def pair_study(
    predict: selection.Predict,
    decode: Decode,
    classifier: Callable[[np.ndarray], np.ndarray],
    codebook: np.ndarray,
    base: np.ndarray,
    sources: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    cfg: selection.SelectionConfig,
    seed: int = 0,
    image_ids: np.ndarray | None = None,
    editors: Mapping[str, Editor] | None = None,
) -> dict:
    """Table 5: ΔP_orig and ΔP_target (mean over images) for token selection (from random tokens,
    the authors' start, and from the image's own), the embedding baseline and the random-token
    control, from the IEM (softmax of its logits) and from `classifier` on decoded images, at the
    final step and at the best logged step (by IEM f_target). `image_ids` (B,): global ids that
    seed each image's init and Gumbel noise (default 0..B−1), so that results do not depend on
    how images are batched. `editors` add rows for other editing methods, each a function
    (base, sources, targets, mask) → edited grids (for example MaskGIT's own re-mask and
    re-decode, `maskgit.MaskGITVQGM.edit_tokens`). Every row also reports how many tokens an image
    had changed and ΔP_target (judge) per changed token, so methods that change different
    numbers of tokens compare fairly."""
    rows = np.arange(len(base))
    iem_probs = jax.jit(lambda e: jax.nn.softmax(predict(e), -1))

    def measure(grids):
        """P(orig), P(target) from the IEM and the classifier, one pass each over the grids."""
        e = np.asarray(codebook)[grids]
        p_iem = np.concatenate([np.asarray(iem_probs(e[j : j + 1])) for j in range(len(grids))])
        p_judge = np.asarray(classifier(np.asarray(decode(grids))))
        return {
            "iem_orig": p_iem[rows, sources],
            "iem_target": p_iem[rows, targets],
            "judge_orig": p_judge[rows, sources],
            "judge_target": p_judge[rows, targets],
        }, float(np.mean(p_judge.argmax(-1) == targets))

    before, _ = measure(base)
    key = jax.random.PRNGKey(seed)
    select = lambda c: selection.select_tokens(
        predict, codebook, base, mask, targets, sources, key, c, image_ids=image_ids
    )
    runs = {
        "token_selection": select(dataclasses.replace(cfg, init="random")),
        "token_selection_from_image": select(dataclasses.replace(cfg, init="image")),
        "embedding_optimisation": selection.optimize_embedding(
            predict, codebook, base, mask, targets, sources, dataclasses.replace(cfg, init="image")
        ),
    }
    edits = {"random_tokens/start": runs["token_selection"].edited(base, "start")}
    for name, res in runs.items():
        for which in ("final", "best"):
            edits[f"{name}/{which}"] = res.edited(base, which)
    for name, edit in (editors or {}).items():
        edits[f"{name}/final"] = np.asarray(edit(base, sources, targets, mask))
    table = {}
    for row_name, grids in edits.items():
        after, top1 = measure(grids)
        row = {f"delta_{k}": float(np.mean(after[k] - before[k])) for k in after}
        changed = float(np.mean((np.asarray(grids) != base).reshape(len(base), -1).sum(1)))
        per_token = row["delta_judge_target"] / changed if changed else float("nan")
        table[row_name] = row | {
            "judge_target_top1": top1,
            "tokens_changed": changed,
            "delta_judge_target_per_token": per_token,
        }
    return {
        "before": {k: float(np.mean(v)) for k, v in before.items()},
        "table": table,
        "n_images": int(len(base)),
        "region_tokens": int(mask.sum()),
    }


def pairs_from(names: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    """Name pairs → index pairs, in both directions (each concept optimised toward its partner)."""
    out = []
    for a, b in pairs:
        ia, ib = list(names).index(a), list(names).index(b)
        out += [(ia, ib), (ib, ia)]
    return out
