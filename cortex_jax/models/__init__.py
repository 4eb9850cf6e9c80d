"""Flax networks and their samplers, and nothing that touches a file.

vqgan (taming's VQGAN), cin (taming's class-conditional GPT), vqgm (a VQGAN + cin prior as one
class-conditional VQGM), maskgit (MaskGIT's tokenizer, transformer and parallel decoding), dalle
(DalleBart), iem (the information extractors CE / RE / TE), classifier (torchvision's ResNets).
Imports: core only. Reading and writing their weights is `cortex_jax.io`.
"""
