"""The method: pure functions of arrays and callables (`predict`, `decode`, `classifier`).

tis (SmoothGrad token importance, T_image, T_concept, the batched driver), attribution (the
attribution methods behind one seam: smoothgrad, gradient, grad×input, integrated gradients,
occlusion, random), selection (codebook-level token selection and its baseline), evaluate
(counterfactual masking), stats (effect sizes, paired intervals and tests, the mixture share),
audit (the bias audit's statistics). Imports: core only; no model, no file.
"""
