"""cortex-jax: explain vector-quantized generative models through their codebook tokens.

The method, on arrays and callables:

    import cortex_jax as cx

    vq = cx.load_vqgan("toy")                       # or a vqgan-jax folder, a HF repo id, a
                                                    # taming .ckpt, MaskGIT's tokenizer file,
                                                    # LlamaGen's vq_ds16_c2i.pt
    lg = cx.load_llamagen("c2i_L_256.pt", "vq_ds16_c2i.pt")  # LlamaGen's class-conditional VQGM
    predict, _ = cx.train_iem(vq, train, val, "runs/iem")   # any VQGMLike: codebook + decode
    scores = cx.token_importance(predict, cx.embed(vq, grids), labels, rng)    # TIS (B, m, m)
    attr = cx.token_attribution(predict, E, labels, rng, "integrated_gradients", steps=64)
    _, ids = cx.image_tokens(scores, grids, n=5)                              # T_image
    sets, counts = cx.concept_tokens(ids, labels, n_classes, K, k=10)         # T_concept
    res = cx.select_tokens(predict, vq.codebook, grids, cx.region_mask(m), target, source, rng)

The experiments, on a `Models` bundle (they write their reports and figures):

    models = cx.toy_models("ce")                    # or cx.models_of(your_vqgm, names, ...),
                                                    # cx.models_from_files(vqgan, iem, classifier)
    cx.sample_study(models, [0, 1], cx.StudyConfig(), "runs/sample")          # Table 2, Fig. 3–4
    cx.SampleLevelReport.read("runs/sample").summary        # what it wrote, read back, typed
    cx.edit(models, target, cx.start_from_concept(models, src, 4, 0), cx.EditConfig(), "runs/e")
    cx.table5(models, [(0, 1), (1, 0)], cx.Table5Config(), "runs/table5")      # Table 5
    cx.audit(models, "red-circle", "blue-circle", "circle", cx.AuditConfig(), "runs/audit")

`docs/own_vqgm.py` explains a VQGM built outside this project end to end (tests run it);
docs/architecture.md says where everything lives.
"""

# ruff: noqa: F401  (the TYPE_CHECKING block re-exports; ruff cannot read __all__ from _EXPORTS)

import importlib
from typing import TYPE_CHECKING

# Public name -> "module:attribute" (or a module). Imported on first use (PEP 562), so that
# `python -m explain.…` and `import cortex_jax.core.…` pay only for what they use, not for JAX,
# SciPy and matplotlib through every experiment; the TYPE_CHECKING block below names the same
# objects for type checkers and readers (tests/test_api.py checks that the two agree).
_EXPORTS = {
    "AuditConfig": "cortex_jax.experiments.bias:AuditConfig",
    "EditConfig": "cortex_jax.experiments.codebook_level:EditConfig",
    "IEMConfig": "cortex_jax.models.iem:IEMConfig",
    "LoadedIEM": "cortex_jax.api:LoadedIEM",
    "Models": "cortex_jax.experiments.bundle:Models",
    "SampleLevelConfig": "cortex_jax.experiments.sample_level:SampleLevelConfig",
    "SampleLevelReport": "cortex_jax.io.reports:SampleLevelReport",
    "SelectionConfig": "cortex_jax.method.selection:SelectionConfig",
    "StudyConfig": "cortex_jax.experiments.sample_level:StudyConfig",
    "Table5Config": "cortex_jax.experiments.codebook_level:Table5Config",
    "TrainConfig": "cortex_jax.experiments.training:TrainConfig",
    "VQGMLike": "cortex_jax.experiments.bundle:VQGMLike",
    "audit": "cortex_jax.experiments.bias:audit",
    "audit_counts": "cortex_jax.method.audit:analyse",
    "concept_tokens": "cortex_jax.method.tis:concept_tokens",
    "decode_tokens": "cortex_jax.experiments.bundle:decode_tokens",
    "edit": "cortex_jax.experiments.codebook_level:edit",
    "embed": "cortex_jax.experiments.bundle:embed",
    "frequency_baseline": "cortex_jax.method.tis:frequency_baseline",
    "image_tokens": "cortex_jax.method.tis:image_tokens",
    "load_cin_vqgm": "cortex_jax.io.sources:load_cin_vqgm",
    "load_classifier": "cortex_jax.io.sources:load_classifier",
    "load_dallebart": "cortex_jax.io.sources:load_dallebart",
    "load_iem": "cortex_jax.api:load_iem",
    "load_llamagen": "cortex_jax.io.sources:load_llamagen",
    "load_maskgit": "cortex_jax.io.sources:load_maskgit",
    "load_vqgan": "cortex_jax.io.sources:load_vqgan",
    "models_from_dallebart": "cortex_jax.experiments.families:from_dallebart",
    "models_from_files": "cortex_jax.experiments.bundle:from_files",
    "models_of": "cortex_jax.experiments.bundle:from_vqgm",
    "optimize_embedding": "cortex_jax.method.selection:optimize_embedding",
    "pair_study": "cortex_jax.experiments.codebook_level:pair_study",
    "region_mask": "cortex_jax.method.selection:region_mask",
    "run_audit": "cortex_jax.experiments.bias:run_audit",
    "sample_level": "cortex_jax.experiments.sample_level:run",
    "sample_study": "cortex_jax.experiments.sample_level:study",
    "save_vqgan": "cortex_jax.io.folders:save_vqgan",
    "select_tokens": "cortex_jax.method.selection:select_tokens",
    "start_from_codebook": "cortex_jax.experiments.codebook_level:start_from_codebook",
    "start_from_concept": "cortex_jax.experiments.codebook_level:start_from_concept",
    "start_from_dataset": "cortex_jax.experiments.codebook_level:start_from_dataset",
    "start_from_image": "cortex_jax.experiments.codebook_level:start_from_image",
    "table5": "cortex_jax.experiments.codebook_level:table5",
    "token_attribution": "cortex_jax.method.attribution:token_attribution",
    "token_dataset": "cortex_jax.api:token_dataset",
    "token_importance": "cortex_jax.method.tis:token_importance",
    "token_importance_batched": "cortex_jax.method.tis:token_importance_batched",
    "toy": "cortex_jax.toy",
    "toy_models": "cortex_jax.toy:models",
    "train_iem": "cortex_jax.api:train_iem",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    try:
        module, _, attribute = _EXPORTS[name].partition(":")
    except KeyError:
        raise AttributeError(f"module 'cortex_jax' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute:
        value = getattr(value, attribute)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from cortex_jax import toy
    from cortex_jax.api import LoadedIEM, load_iem, token_dataset, train_iem
    from cortex_jax.experiments.bias import AuditConfig, audit, run_audit
    from cortex_jax.experiments.bundle import (
        Models,
        VQGMLike,
        decode_tokens,
        embed,
    )
    from cortex_jax.experiments.bundle import from_files as models_from_files
    from cortex_jax.experiments.bundle import from_vqgm as models_of
    from cortex_jax.experiments.codebook_level import (
        EditConfig,
        Table5Config,
        edit,
        pair_study,
        start_from_codebook,
        start_from_concept,
        start_from_dataset,
        start_from_image,
        table5,
    )
    from cortex_jax.experiments.families import from_dallebart as models_from_dallebart
    from cortex_jax.experiments.sample_level import SampleLevelConfig, StudyConfig
    from cortex_jax.experiments.sample_level import run as sample_level
    from cortex_jax.experiments.sample_level import study as sample_study
    from cortex_jax.experiments.training import TrainConfig
    from cortex_jax.io.folders import save_vqgan
    from cortex_jax.io.reports import SampleLevelReport
    from cortex_jax.io.sources import (
        load_cin_vqgm,
        load_classifier,
        load_dallebart,
        load_llamagen,
        load_maskgit,
        load_vqgan,
    )
    from cortex_jax.method.attribution import token_attribution
    from cortex_jax.method.audit import analyse as audit_counts
    from cortex_jax.method.selection import (
        SelectionConfig,
        optimize_embedding,
        region_mask,
        select_tokens,
    )
    from cortex_jax.method.tis import (
        concept_tokens,
        frequency_baseline,
        image_tokens,
        token_importance,
        token_importance_batched,
    )
    from cortex_jax.models.iem import IEMConfig
    from cortex_jax.toy import models as toy_models
