"""A class-conditional VQ generative model: class → sampled tokens → decoded image.

`ClassConditionalVQGM` bundles a VQGAN, a cin-style GPT prior and the class names, and is what
`train.generate` samples from, for the toy world and for ImageNet alike. Concept names resolve
with a clear error that lists close matches.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cortex_jax.models import cin
from cortex_jax.models.vqgan import VQGAN

Array = jax.Array


def resolve_name(name: str, names: Sequence[str], what: str = "concept") -> int:
    """Index of `name` in `names`, or ValueError naming close matches."""
    if name in names:
        return list(names).index(name)
    close = difflib.get_close_matches(name, list(names), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; expected one of {list(names)}"
    raise ValueError(f"unknown {what} {name!r}{hint}")


@dataclasses.dataclass(frozen=True, eq=False)
class ClassConditionalVQGM:
    """Attributes:
    name: short name ("toy", "imagenet").
    vqgan: the tokenizer/decoder.
    gpt_config, gpt_params: the prior over token grids.
    class_names: one name per class id.
    """

    name: str
    vqgan: VQGAN
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

    @property
    def grid_size(self) -> int:
        return self.vqgan.grid_size

    def class_id(self, name: str) -> int:
        return resolve_name(name, self.class_names, f"{self.name} class")

    def sample_tokens(
        self,
        class_ids: Sequence[int] | np.ndarray,
        rng: jax.Array,
        sample_config: cin.SampleConfig = cin.SampleConfig(),
        dtype: Any = jnp.float32,
    ) -> Array:
        """(B,) class ids → (B, m, m) token grids; `dtype` is the transformer's compute type
        (bfloat16 roughly halves the cost on accelerators; float32 is what taming sampled in)."""
        toks = cin.sample(
            self.gpt_config, self.gpt_params, np.asarray(class_ids), rng, sample_config, dtype
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

    def decode(self, tokens: Any) -> Array:
        """(B, m, m) tokens → pixels (B, H, W, 3) clipped to [-1, 1]."""
        return jnp.clip(self.vqgan.decode_code(tokens), -1.0, 1.0)
