"""The written interfaces of VQ generative models: class or prompt → sampled tokens → image.

`ClassConditional` is the interface every class-conditional family here satisfies (taming's cin
prior and the toy world below, `maskgit.MaskGITVQGM`, `llamagen.LlamaGenVQGM`); `Encodes` and
`ResamplesRegion` are the optional abilities some of them add. `PromptConditional` is the
text-to-image kind (`dalle.DalleBartVQGM`): the same tokenizer, grid and codebook, sampled
from a prompt instead of a class id. The registry that names them
(`cortex_jax.experiments.families`, one `conditioning` per family) and `generate_dataset` /
`generate_prompt_dataset` take these types only.

`ClassConditionalVQGM` bundles a VQGAN, a cin-style GPT prior and the class names, and is what
`train.generate` samples from, for the toy world and for ImageNet alike. Concept names resolve
with a clear error that lists close matches.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from cortex_jax.models import cin
from cortex_jax.models.vqgan import VQTokenizer

Array = jax.Array


def resolve_name(name: str, names: Sequence[str], what: str = "concept") -> int:
    """Index of `name` in `names`, or ValueError naming close matches."""
    if name in names:
        return list(names).index(name)
    close = difflib.get_close_matches(name, list(names), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; expected one of {list(names)}"
    raise ValueError(f"unknown {what} {name!r}{hint}")


class _TokenGenerator(Protocol):
    """What both kinds of VQGM offer (read-only name, tokenizer, grid side, codebook; decode)."""

    @property
    def name(self) -> str: ...

    @property
    def vqgan(self) -> VQTokenizer: ...

    @property
    def grid_size(self) -> int: ...

    @property
    def codebook(self) -> Any: ...

    def decode(self, tokens: Any) -> Any: ...


@runtime_checkable
class ClassConditional(_TokenGenerator, Protocol):
    """What a class-conditional VQGM offers every entry point (shapes: grids (B, m, m) int).

    Attributes (read-only):
      name: a short name for reports and meta.json ("toy", "imagenet", "maskgit", "llamagen").
      class_names: one name per class id.
      vqgan: its tokenizer, a `VQTokenizer` (codebook, encode, embed, decode_code, decode_pixels).
      grid_size: m, the side of the token grid.
      codebook: (K, d) token embeddings; E for CORTEX is codebook[grids].

    Methods:
      class_id(name): the class id of a name, or ValueError naming close matches.
      sample_tokens(class_ids, rng, sample_config, dtype): (B,) class ids → (B, m, m) grids;
        `sample_config` is the family's own settings dataclass (its default when omitted),
        `dtype` the transformer's compute type (None or omitted: the family's default).
      decode(grids): pixels (B, H, W, 3) clipped to [−1, 1].
    """

    @property
    def class_names(self) -> tuple[str, ...]: ...

    def class_id(self, name: str) -> int: ...

    def sample_tokens(
        self, class_ids: Any, rng: Any, sample_config: Any = ..., dtype: Any = ...
    ) -> Any: ...


@runtime_checkable
class Encodes(Protocol):
    """Optional: `encode(pixels (B, H, W, 3) in [−1, 1]) -> grids (B, m, m)`."""

    def encode(self, pixels: Any) -> Any: ...


@runtime_checkable
class ResamplesRegion(Protocol):
    """Optional: the family's own editing of a region, `resample_region(grids (B, m, m),
    mask (m, m) or (B, m, m) bool, target class ids (B,), key) -> grids (B, m, m)`: masked
    positions re-drawn for the target class, the others kept (MaskGIT: re-mask and re-decode;
    LlamaGen: re-sample in raster order with the kept tokens teacher-forced)."""

    def resample_region(self, tokens: Any, mask: Any, class_ids: Any, key: Any) -> Any: ...


@runtime_checkable
class PromptConditional(_TokenGenerator, Protocol):
    """What a prompt-conditioned (text-to-image) VQGM offers every entry point.

    Attributes (read-only):
      name: a short name for reports and meta.json ("dallebart").
      vqgan: its tokenizer, a `VQTokenizer` (the codebook, the decoder, the encoder).
      grid_size: m, the side of the token grids it samples.
      codebook: (K, d) token embeddings; E for CORTEX is codebook[grids].

    Methods:
      sample_prompt(prompt, n, seed, sample_config, dtype): n grids (n, m, m) of one text
        prompt, drawn from the integer `seed`; `sample_config` is the family's own settings
        dataclass (its default when omitted), `dtype` the transformer's compute type.
      decode(grids): pixels (B, H, W, 3) clipped to [−1, 1].
    Optional: `encode(pixels) -> grids` (`Encodes`).
    """

    def sample_prompt(
        self, prompt: str, n: int, seed: int, sample_config: Any = ..., dtype: Any = ...
    ) -> Any: ...


class VQGMBase:
    """What every class-conditional VQGM here does the same way over its tokenizer `vqgan`, its
    `class_names` and its `name` (a base of the frozen dataclasses `ClassConditionalVQGM`,
    `maskgit.MaskGITVQGM` and `llamagen.LlamaGenVQGM`, which declare those fields): the grid
    side, the codebook, names → ids, class-id checks, encoding and decoding."""

    name: str
    vqgan: Any
    class_names: tuple[str, ...]

    @property
    def grid_size(self) -> int:
        """m, the side of the token grid."""
        return self.vqgan.grid_size

    @property
    def codebook(self) -> Array:
        """(K, d) codebook rows of the tokenizer (E = codebook[ids] on the grid)."""
        return self.vqgan.codebook

    def class_id(self, name: str) -> int:
        """The class id of a name, or ValueError naming close matches."""
        return resolve_name(name, self.class_names, f"{self.name} class")

    def check_classes(self, class_ids: Any) -> np.ndarray:
        """(B,) integer class ids in [0, number of classes), as int32, or one-line ValueError."""
        ids = np.asarray(class_ids)
        n = len(self.class_names)
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise ValueError(f"class ids have shape {ids.shape} / dtype {ids.dtype}; expected (B,)")
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            raise ValueError(
                f"class id {int(ids[bad][0])} is outside the model's {n} classes (0..{n - 1})"
            )
        return ids.astype(np.int32)

    def encode(self, pixels: Any) -> np.ndarray:
        """Pixels (B, H, W, 3) in [−1, 1] → token grids (B, m, m) (the tokenizer's encoder)."""
        ids = np.asarray(self.vqgan.encode(pixels))
        return ids.reshape(len(ids), self.grid_size, self.grid_size)

    def decode(self, tokens: Any) -> Array:
        """(B, m, m) tokens → pixels (B, H, W, 3) clipped to [−1, 1]."""
        return jnp.clip(self.vqgan.decode_code(tokens), -1.0, 1.0)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassConditionalVQGM(VQGMBase):
    """Attributes:
    name: short name ("toy", "imagenet").
    vqgan: the tokenizer/decoder.
    gpt_config, gpt_params: the prior over token grids.
    class_names: one name per class id.
    """

    name: str
    vqgan: VQTokenizer
    gpt_config: cin.GPTConfig
    gpt_params: Any
    class_names: tuple[str, ...]

    def __post_init__(self):
        m = self.vqgan.grid_size
        if self.gpt_config.n_image_tokens != m * m:
            raise ValueError(
                f"prior generates {self.gpt_config.n_image_tokens} tokens but the VQGAN grid is "
                f"{m}x{m}"
            )
        if self.gpt_config.image_vocab_size != self.vqgan.config.n_embed:
            raise ValueError(
                f"prior image vocabulary {self.gpt_config.image_vocab_size} != VQGAN codebook "
                f"{self.vqgan.config.n_embed}"
            )
        if len(self.class_names) != self.gpt_config.n_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for a prior of "
                f"{self.gpt_config.n_classes} classes"
            )

    def sample_tokens(
        self,
        class_ids: Sequence[int] | np.ndarray,
        rng: jax.Array,
        sample_config: cin.SampleConfig = cin.SampleConfig(),
        dtype: Any = jnp.float32,
    ) -> Array:
        """(B,) class ids → (B, m, m) token grids; `dtype` is the transformer's compute type
        (bfloat16 roughly halves the cost on accelerators; float32, also for None, is what
        taming sampled in)."""
        dt = jnp.float32 if dtype is None else dtype
        toks = cin.sample(
            self.gpt_config, self.gpt_params, np.asarray(class_ids), rng, sample_config, dt
        )
        m = self.grid_size
        return toks.reshape(-1, m, m)

    def infill_tokens(self, class_ids: Any, tokens: Any) -> np.ndarray:
        """(B,) class ids, (B, m, m) grids → (B, m, m) the prior's most likely other token at
        each position given the grid's prefix (`cin.infill_tokens`)."""
        t = np.asarray(tokens)
        out = cin.infill_tokens(
            self.gpt_config, self.gpt_params, np.asarray(class_ids), t.reshape(len(t), -1)
        )
        return np.asarray(out).reshape(t.shape)
