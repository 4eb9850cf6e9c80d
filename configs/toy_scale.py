"""The recipe's disk-based steps on the toy world's shipped VQGM, at the paper's image counts.

    python -m train.generate  --config configs/toy_scale.py
    python -m train.iem       --config configs/toy_scale.py
    python -m explain.sample  --config configs/toy_scale.py
    python -m explain.report  --config configs/toy_scale.py
    python -m explain.atlas   --config configs/toy_scale.py

or all of them in order, timed, with `python -m bench.scale --n 1000000 --workdir DIR`. The same
steps as configs/imagenet.py (experiments/recipe.py) with the toy prior as the generator
(temperature 0.8, top-k 20: the shipped prior's settings), the toy VQGAN (8×8 tokens of K = 512),
a small IEM (configs/iem_*.py:variant=toy's network, a few epochs) and the toy world's pixel
judge as the masking classifier. The paper's counts: 1,000,000 generated training images,
300,000 validation and 50,000 test, spread evenly over the 14 toy concepts (so per concept
round(count / 14): 71,429 / 21,429 / 3,571, i.e. 1,000,006 / 300,006 / 49,994 images).

Options (`configs/toy_scale.py:n=10000,iem=re,epochs=2`):
  n       training images (default 1,000,000); validation and test scale with it (0.3 n, 0.05 n),
          at least one image per concept each.
  iem     ce (default), re or te.
  epochs  IEM training epochs (default 3).
Every path hangs off `workdir` (`--config.workdir=DIR`, default runs/toy_scale_<n>).
"""

from pathlib import Path

import ml_collections

from configs import iem_base

PAPER_COUNTS = {"train": 1_000_000, "val": 300_000, "test": 50_000}
N_CONCEPTS = 14  # the toy world's concepts, class ids 0..13 (cortex_jax.toy.world.CONCEPTS)
# The shipped toy weights (VQGAN, prior, judge), read in place.
WEIGHTS = Path(__file__).resolve().parents[1] / "cortex_jax" / "toy" / "weights"


def per_concept(n: int) -> dict[str, int]:
    """Images per concept of each split for `n` training images (paper proportions)."""
    scale = n / PAPER_COUNTS["train"]
    return {s: max(1, round(c * scale / N_CONCEPTS)) for s, c in PAPER_COUNTS.items()}


def _int(opts: dict[str, str], key: str, default: int) -> int:
    value = opts.pop(key, None)
    if value is None:
        return default
    try:
        out = int(value.replace("_", ""))
    except ValueError:
        out = 0
    if out < 1:
        raise ValueError(f"configs/toy_scale.py {key}={value!r}; expected a positive whole number")
    return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = iem_base.parse_arg(arg)
    n = _int(opts, "n", PAPER_COUNTS["train"])
    epochs = _int(opts, "epochs", 3)
    arch = opts.pop("iem", "ce")
    if opts:
        raise ValueError(
            f"unknown configs/toy_scale.py options {sorted(opts)}; expected n=N, iem=ce|re|te "
            "and/or epochs=E"
        )
    if arch not in ("ce", "re", "te"):
        raise ValueError(f"unknown IEM {arch!r}; expected iem=ce, iem=re or iem=te")

    # The IEM part is configs/iem_<arch>.py:variant=toy (its network and schedule), so train.iem
    # reads it unchanged; only the data come from this recipe's generate step.
    c = iem_base.get_config(arch, "variant=toy")
    c.train.epochs = epochs
    c.train.decay_every = max(1, epochs - 1)
    c.data = ml_collections.ConfigDict(dict(generate_if_missing=False))
    workdir = ml_collections.FieldReference(f"runs/toy_scale_{n}")
    c.workdir = workdir
    c.variant = "toy_scale"
    c.family = "toy"
    c.iem_workdir = workdir + f"/iem_{arch}"
    c.vqgan = workdir + "/models/vqgan"  # written by train.generate from the shipped VQGAN
    c.data.train = workdir + "/tokens/train"
    c.data.val = workdir + "/tokens/val"
    c.data.test = workdir + "/tokens/test"

    c.checkpoint = str(WEIGHTS)  # the toy family reads vqgan/ and prior/ from this folder
    c.n_head = 0
    c.classifier = "family"  # the family's own classifier: the toy world's pixel judge
    c.edit_classifier = "family"
    c.classifier_size = 32

    counts = per_concept(n)
    c.generate = ml_collections.ConfigDict(
        dict(
            classes=",".join(str(i) for i in range(N_CONCEPTS)),
            train=counts["train"],
            val=counts["val"],
            test=counts["test"],
            top_k=20,
            temperature=0.8,
            top_p=1.0,
            shard_size=1024,
            seed=0,
            test_png=False,  # 50,000 files for nothing: the atlas decodes what it shows
            dtype="float32",
        )
    )
    # TIS (SmoothGrad N 20, the paper's) on all training images, T_image n 5, T_concept k 10.
    c.sample = ml_collections.ConfigDict(
        dict(
            n=5,
            k=10,
            n_samples=20,
            alpha=0.2,
            batch=256,
            curve_ns=(1, 2, 3, 5, 8, 12, 16),
            seed=0,
            shown_concepts=N_CONCEPTS,
            shown_per_concept=8,
            arrays_per_concept=64,  # test images a concept kept in arrays.npz, for the atlas
        )
    )
    # Table 5 (explain.codebook) is not part of the rehearsal; a small toy version for completeness.
    c.codebook = ml_collections.ConfigDict(
        dict(
            pairs=((0, 1), (2, 3), (6, 7)),  # red → blue of the same shape
            images_per_pair=8,
            steps=200,
            learning_rate=0.01,
            log_every=50,
            region="center",
            batch=8,
            seed=0,
        )
    )
    return c
