"""The models an experiment uses, as one bundle of callables (`Models`).

Every experiment takes a frozen config and a `Models`. The toy world (`cortex_jax.toy.models`),
the ImageNet recipe (`recipe.models`), real model files (`from_files`) and a user's own VQGM
(`from_vqgm`) each only *build* one; nothing downstream knows which built it.

Shapes: token grids are int (B, m, m); E is (B, m, m, d); pixels are float (B, H, W, 3) in
[-1, 1]; probabilities are (B, C).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import jax
import numpy as np
from flax.errors import FlaxError

from cortex_jax.core import imagenet
from cortex_jax.io import sources
from cortex_jax.models import iem
from cortex_jax.models.vqgan import VQTokenizer
from cortex_jax.models.vqgm import resolve_name

Array = jax.Array
Decode = Callable[[np.ndarray], np.ndarray]  # token grids (B, m, m) → pixels (B, H, W, 3)
Predict = Callable[[Array], Array]  # E (B, m, m, d) → IEM logits (B, C)
Classifier = Callable[[np.ndarray], Any]  # pixels (B, H, W, 3) → probabilities (B, C)
Sample = Callable[[np.ndarray, int], np.ndarray]  # class ids (B,), seed → token grids (B, m, m)
PromptSample = Callable[[str, int, int], np.ndarray]  # name or prompt, n, seed → (n, m, m)
Encode = Callable[[np.ndarray], np.ndarray]  # pixels (B, H, W, 3) → token grids (B, m, m)


@runtime_checkable
class VQGMLike(Protocol):
    """What cortex-jax needs of a vector-quantized generative model.

    Attributes:
      codebook: (K, d) array, the token embeddings; E = codebook[ids] on the (m, m) grid.
      decode: E (B, m, m, d) → pixels (B, H, W, 3) in [-1, 1].
    Optional (duck-typed where a command needs them): `encode(pixels) -> ids (B, m·m)` and
    `sample_tokens(class_ids, rng) -> (B, m, m)` ids.
    """

    @property
    def codebook(self) -> Any: ...

    def decode(self, embedding: Any) -> Any: ...


def check_grids(grids: Any, codebook_size: int) -> np.ndarray:
    """Token grids (B, m, m) as an integer array, or one line naming what is wrong."""
    t = np.asarray(grids)
    if t.ndim != 3 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"token grids have shape {t.shape} / dtype {t.dtype}; expected (B, m, m)")
    if t.size and (t.min() < 0 or t.max() >= codebook_size):
        raise ValueError(
            f"token ids span {t.min()}..{t.max()}; the codebook has {codebook_size} rows"
        )
    return t


def as_grids(ids: Any) -> np.ndarray:
    """Token ids (B, m·m) row-major, or grids (B, m, m), as int32 grids (B, m, m)."""
    a = np.asarray(ids)
    if a.ndim == 2:
        m = math.isqrt(a.shape[1])
        if m * m != a.shape[1]:
            raise ValueError(f"{a.shape[1]} token ids per image do not form a square grid")
        a = a.reshape(len(a), m, m)
    return a.astype(np.int32)


def embed(model: VQGMLike, tokens: np.ndarray) -> Array:
    """E (B, m, m, d) of token grids (B, m, m), or of ids (B, m·m) row-major as `vq.encode`
    returns them: the model's codebook rows, checked in range."""
    cb = jax.numpy.asarray(model.codebook)
    t = np.asarray(tokens)
    if t.ndim == 2 and np.issubdtype(t.dtype, np.integer):
        t = as_grids(t)
    return cb[check_grids(t, cb.shape[0])]


def decode_tokens(model: VQGMLike, tokens: np.ndarray) -> np.ndarray:
    """Pixels (B, H, W, 3) of token grids, clipped to [-1, 1]."""
    return np.clip(np.asarray(model.decode(embed(model, tokens))), -1, 1)


@dataclasses.dataclass(frozen=True)
class Models:
    """What an experiment may call. Only `codebook`, `decode` and `class_names` are always
    there; an experiment asks for the rest with `require` and names what is missing.

    Attributes:
      codebook: (K, d) token embeddings; E = codebook[grids].
      decode: token grids → pixels in [-1, 1] (any batch size; batched inside).
      class_names: the IEM's classes (and the generator's class ids), in order.
      grid_size: m (None when unknown: experiments then read it off the grids they get).
      image_size: the decoded images' side in pixels (what `encode` expects), when known.
      predict: the IEM, E → logits over `class_names`; `predict_name` (ce, re, te) for reports.
      classifier: the independent pixel classifier (the toy world's judge, a ResNet), pixels →
        probabilities over `class_names`.
      classifier_name: how reports name it.
      sample: the generator, (class ids, seed) → token grids.
      sample_prompt: a generator by name or prompt, (text, n, seed) → grids (a text-to-image
        model); by default `sample` with `resolve`.
      encode: pixels → token grids (the VQGAN encoder), for experiments that start from images.
      resolve: a concept name → class id, raising with close matches.
      infill: the generator's in-distribution replacement, (class ids (B,), grids (B, m, m)) →
        grids of its most likely other token at each position given the prefix (faithfulness
        curves' "generator" removal).
      name: the VQGM's name, for reports.
    """

    codebook: np.ndarray
    decode: Decode
    class_names: tuple[str, ...]
    grid_size: int | None = None
    image_size: int | None = None
    predict: Predict | None = None
    predict_name: str = "iem"
    classifier: Classifier | None = None
    classifier_name: str = "classifier"
    sample: Sample | None = None
    sample_prompt: PromptSample | None = None
    encode: Encode | None = None
    resolve: Callable[[str], int] | None = None
    name: str = "vqgm"
    infill: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def require(self, *fields: str, what: str = "this experiment") -> tuple[Any, ...]:
        """The callables `what` needs, in order; raises one line naming those the bundle lacks."""
        missing = [f for f in fields if getattr(self, f) is None]
        if missing:
            raise ValueError(f"{what} needs {', '.join(missing)}; the {self.name} bundle has none")
        return tuple(getattr(self, f) for f in fields)

    def class_id(self, name: str) -> int:
        """A concept name → its class id (close matches in the error)."""
        if self.resolve is not None:
            return self.resolve(name)
        return resolve_name(name, self.class_names, "concept")

    def sample_named(self, name: str, n: int, seed: int) -> np.ndarray:
        """n token grids of the concept (or prompt) `name`, (n, m, m)."""
        if self.sample_prompt is not None:
            return np.asarray(self.sample_prompt(name, n, seed))
        (sample,) = self.require("sample", what=f"generating images of {name!r}")
        return np.asarray(sample(np.full(n, self.class_id(name)), seed))

    def embed(self, grids: np.ndarray) -> np.ndarray:
        """E (B, m, m, d) of token grids, the ids checked against the codebook."""
        return np.asarray(self.codebook)[check_grids(grids, len(self.codebook))]


def batched(fn: Callable[[np.ndarray], Any], batch: int | None) -> Callable[[np.ndarray], Any]:
    """fn applied `batch` rows at a time (all at once when None), results concatenated."""
    if batch is None:
        return fn
    return lambda x: np.concatenate(
        [np.asarray(fn(x[i : i + batch])) for i in range(0, len(x), batch)]
    )


def _vqgan_encoder(vq: VQTokenizer) -> Encode:
    return lambda px: as_grids(vq.encode(px))


def load_predict(
    source: str | os.PathLike, arch: Literal["ce", "re", "te"] | None = None
) -> tuple[Predict, dict[str, Any]]:
    """An IEM folder written by train.iem, or the authors' `.pth` (`sources.load_iem`) →
    (predict E → logits, its meta)."""
    cfg, variables, meta = sources.load_iem(source, arch)
    return iem.predictor(cfg, variables), meta


def check_iem_reads(
    predict: Predict, vq: VQTokenizer | Models, problem: str, expected: str
) -> None:
    """Raises one line (`problem` E-shape `expected`) unless `predict` accepts the E (1, m, m, d)
    of this VQGAN (or bundle's): shapes only (`jax.eval_shape`), before any work."""
    m = vq.grid_size
    d = vq.codebook.shape[1] if isinstance(vq, Models) else vq.config.embed_dim
    e = jax.ShapeDtypeStruct((1, m, m, d), np.float32)
    try:
        jax.eval_shape(predict, e)
    except (FlaxError, TypeError, ValueError):  # flax's ScopeParamShapeError, XLA's shapes
        raise ValueError(f"{problem} {tuple(e.shape[1:])}{expected}") from None


def from_files(
    vqgan: str | os.PathLike,
    iem_folder: str | os.PathLike | None = None,
    classifier: str | None = None,
    classifier_size: int = 224,
    decode_batch: int | None = None,
    classifier_batch: int | None = None,
    class_names: Sequence[str] | None = None,
    iem_arch: Literal["ce", "re", "te"] | None = None,
) -> Models:
    """A bundle from model files: the VQGAN (any `load_vqgan` source), optionally an IEM (a
    train.iem folder or the authors' `.pth`, whose architecture must be `iem_arch` when given;
    its class names become the bundle's) and a pixel classifier (any `load_classifier` source).
    A 1000-class bundle resolves ImageNet names, indices and synsets."""
    vq = sources.load_vqgan(vqgan)
    predict, names = None, list(class_names or [])
    if iem_folder is not None:
        predict, meta = load_predict(iem_folder, iem_arch)
        names = list(meta["class_names"])
        check_iem_reads(
            predict,
            vq,
            f"IEM {str(iem_folder)!r} cannot read this VQGAN's E",
            f" ({vqgan}); expected an IEM trained on E of that grid and codebook width",
        )
    probs = None
    if classifier is not None:
        _, _, probs = sources.load_classifier(classifier, classifier_size)
        probs = batched(probs, classifier_batch)
    imagenet_names = len(names) == len(imagenet.classes())
    return Models(
        codebook=np.asarray(vq.codebook),
        decode=functools.partial(vq.decode_pixels, batch=decode_batch),
        class_names=tuple(names),
        grid_size=vq.grid_size,
        image_size=vq.config.resolution,
        predict=predict,
        classifier=probs,
        classifier_name=str(classifier),
        encode=_vqgan_encoder(vq),
        resolve=imagenet.resolve
        if imagenet_names
        else functools.partial(resolve_name, names=names, what="IEM class"),
        name=str(vqgan),
    )


def from_vqgm(
    model: VQGMLike,
    class_names: Sequence[str],
    predict: Predict | None = None,
    classifier: Classifier | None = None,
    sample: Sample | None = None,
    grid_size: int | None = None,
    name: str = "user",
) -> Models:
    """A bundle of any model with `codebook` (K, d) and `decode(E) -> pixels` (`VQGMLike`);
    its optional `encode(pixels) -> ids` is used when present."""
    encode = None
    if hasattr(model, "encode"):
        m_encode = model.encode
        encode = lambda px: as_grids(m_encode(px))
    return Models(
        codebook=np.asarray(model.codebook),
        decode=functools.partial(decode_tokens, model),
        class_names=tuple(class_names),
        grid_size=grid_size,
        predict=predict,
        classifier=classifier,
        sample=sample,
        encode=encode,
        name=name,
    )
