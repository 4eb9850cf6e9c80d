"""The only layer that orchestrates: each experiment takes a frozen config and a `Models` bundle
of callables and writes its report.

generate (token datasets from a sampler), training (IEM training, resumable), sample_level (TIS,
T_concept and masking), codebook_level (token selection, editing, the Table 5 pair study), bias
(the bias audit), recipe (the ImageNet reproduction: builds the bundle from configs and runs the
steps). Imports: core, models, method, io, figures.
"""
