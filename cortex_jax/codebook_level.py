"""Codebook-level experiments built on `selection`: decoded edit progressions and the paper's
Table 5 design (each image's region optimised toward a partner concept, token selection vs
embedding optimisation, judged by the IEM and by an independent classifier on decoded pixels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np

from cortex_jax import selection

Decode = Callable[[np.ndarray], np.ndarray]


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
) -> dict:
    """Table 5: ΔP_orig and ΔP_target (mean over images) for token selection and the embedding
    baseline, from the IEM (softmax of its logits) and from `classifier` on decoded images,
    at the final step and at the best logged step (by IEM f_target)."""
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
    runs = {
        "token_selection": selection.select_tokens(
            predict, codebook, base, mask, targets, sources, jax.random.PRNGKey(seed), cfg
        ),
        "embedding_optimisation": selection.optimize_embedding(
            predict, codebook, base, mask, targets, sources, cfg
        ),
    }
    table = {}
    for name, res in runs.items():
        for which in ("final", "best"):
            after, top1 = measure(res.edited(base, best=which == "best"))
            row = {f"delta_{k}": float(np.mean(after[k] - before[k])) for k in after}
            table[f"{name}/{which}"] = row | {"judge_target_top1": top1}
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
