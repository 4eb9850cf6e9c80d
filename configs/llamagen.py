"""The ImageNet recipe's steps (configs/imagenet.py) with LlamaGen as the generator.

    python -m train.generate  --config configs/llamagen.py
    python -m train.iem       --config configs/llamagen.py:iem=ce     (and iem=re, iem=te)
    python -m explain.sample  --config configs/llamagen.py:iem=ce
    python -m explain.codebook --config configs/llamagen.py          (Table 5 + llamagen_resample)
    python -m explain.report  --config configs/llamagen.py

`checkpoint` is LlamaGen's c2i GPT (c2i_L_256.pt, …) and `vq_checkpoint` its tokenizer
(vq_ds16_c2i.pt); docs/llamagen.md says where to download them. Sampling is LlamaGen's
sample_c2i.py (cfg 4.0, top-k 2000); Table 5 adds LlamaGen's own re-sampling of the region as a
row. `:runlocal` runs the same commands on a CPU with a random tokenizer (64 px, 16×16 tokens,
K = 64) and GPT (1 layer, width 32): the plumbing, not the numbers. The tokenizer is saved to
WORKDIR/models/vqgan, which every later step reads.
"""

import ml_collections

from configs import imagenet


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = imagenet.get_config(arg)
    runlocal = c.variant == "imagenet_runlocal"
    c.family = "llamagen"
    c.variant = "llamagen_runlocal" if runlocal else "llamagen"
    c.workdir = "runs/llamagen_runlocal" if runlocal else "runs/llamagen"  # paths follow it
    c.checkpoint = "checkpoints/llamagen/c2i_L_256.pt"
    c.vq_checkpoint = "checkpoints/llamagen/vq_ds16_c2i.pt"
    c.gpt_config = None  # a preset or ModelArgs JSON, when width and depth match no preset
    # LlamaGen's sample_c2i.py: cfg 4.0 on logits at every step, top-k 2000, temperature 1.0
    c.generate.update(top_k=2000, temperature=1.0, top_p=1.0)
    c.generate.cfg_scale = 4.0
    c.generate.cfg_interval = -1
    c.codebook.family_edit = True  # Table 5: a llamagen_resample row
    if runlocal:
        c.checkpoint = "random"
        c.random_tokenizer = ml_collections.ConfigDict(
            dict(
                codebook_size=64,
                codebook_embed_dim=8,
                ch=32,
                encoder_ch_mult=(1, 1, 2),
                decoder_ch_mult=(1, 1, 2),
                z_channels=32,
                num_res_blocks=1,
                image_size=64,
            )
        )
        c.random_gpt = ml_collections.ConfigDict(dict(dim=32, n_layer=1, n_head=2, multiple_of=32))
        c.generate.update(top_k=20, cfg_scale=2.0)
    return c
