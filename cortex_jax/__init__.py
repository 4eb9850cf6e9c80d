"""cortex-jax: explain vector-quantized generative models through their codebook tokens.

    import cortex_jax as cx

    vq = cx.load_vqgan("toy")                       # or a vqgan-jax folder, a HF repo id, a
                                                    # taming .ckpt, MaskGIT's tokenizer file
    predict, _ = cx.train_iem(vq, train, val, "runs/iem")   # any VQGMLike: codebook + decode
    scores = cx.token_importance(predict, cx.embed(vq, grids), labels, rng)    # TIS (B, m, m)
    _, ids = cx.image_tokens(scores, grids, n=5)                              # T_image
    sets, counts = cx.concept_tokens(ids, labels, n_classes, K, k=10)         # T_concept
    res = cx.select_tokens(predict, vq.codebook, grids, cx.region_mask(m), target, source, rng)
    report = cx.run_audit(sample, vq.codebook, "A", "B", "neutral", "runs/audit")

`docs/own_vqgm.py` explains a VQGM built outside this project end to end (tests run it);
docs/architecture.md says where everything lives.
"""

from cortex_jax import toy
from cortex_jax.api import VQGMLike, decode_tokens, embed, token_dataset, train_iem
from cortex_jax.experiments.bias import AuditConfig, run_audit
from cortex_jax.experiments.training import TrainConfig
from cortex_jax.io.folders import save_vqgan
from cortex_jax.io.sources import load_maskgit, load_vqgan
from cortex_jax.method.audit import analyse as audit_counts
from cortex_jax.method.selection import (
    SelectionConfig,
    optimize_embedding,
    region_mask,
    select_tokens,
)
from cortex_jax.method.tis import concept_tokens, frequency_baseline, image_tokens, token_importance
from cortex_jax.models.iem import IEMConfig

__all__ = [
    "AuditConfig",
    "IEMConfig",
    "SelectionConfig",
    "TrainConfig",
    "VQGMLike",
    "audit_counts",
    "concept_tokens",
    "decode_tokens",
    "embed",
    "frequency_baseline",
    "image_tokens",
    "load_maskgit",
    "load_vqgan",
    "optimize_embedding",
    "region_mask",
    "run_audit",
    "save_vqgan",
    "select_tokens",
    "token_dataset",
    "token_importance",
    "toy",
    "train_iem",
]
