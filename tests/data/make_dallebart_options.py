"""Dev tool (not run by the tests): writes tests/data/dallebart_options/* with the original
dalle-mini 0.1.5 code, for DalleBart options the shared fixture does not cover.

Needs a separate venv: jax 0.10.2, flax 0.12.8, transformers 4.25.1, einops, emoji, ftfy,
unidecode, `pip install --no-deps dalle-mini==0.1.5`, and an empty `wandb` module on PYTHONPATH.
Each case: DalleBart(config, seed=0), every leaf += 0.05·N(0,1) (numpy default_rng(7), sorted
paths), save_pretrained, and logits for the shared fixture's inputs (train=False).

postln / deepnet are absent: dalle-mini 0.1.5 cannot build them (FlaxBartDecoder.setup only
defines final_ln when ln_positions != "postln", and the config requires the final LN flags, so
__call__ raises AttributeError).
"""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jnp.DeviceArray = jax.Array  # shims dalle-mini 0.1.5 needs on jax 0.10
jax.experimental.PartitionSpec = jax.sharding.PartitionSpec

from dalle_mini.model import DalleBart, DalleBartConfig  # noqa: E402
from flax.traverse_util import flatten_dict, unflatten_dict  # noqa: E402

BASE = dict(
    d_model=16,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    encoder_vocab_size=100,
    image_vocab_size=64,
    image_length=16,
    max_text_length=8,
)
CASES = {
    "rms_preln_ffn_bias": dict(
        ln_type="rmsnorm",
        ln_positions="preln",
        use_glu=False,
        use_bias=True,
        force_ln_scale=True,
        scale_embedding=True,
        use_final_ln_encoder=False,
        use_scan=False,
    ),
    "cogview_headscale_cosine": dict(
        ln_positions="cogview",
        use_head_scale=True,
        use_cosine_attention=True,
        tau_init=0.05,
        use_scan=False,
    ),
    "subln": dict(ln_positions="subln", use_subln_init=True, use_scan=True),
    "swinv2_swinpos_sinkhorn": dict(
        ln_positions="swinv2",
        use_swin_position_embeddings=True,
        sinkhorn_iters=3,
        encoder_layers=7,
        decoder_layers=7,
        use_scan=False,
    ),
}


def main(out_root: Path, io_path: Path):
    io = dict(np.load(io_path))
    for name, opts in CASES.items():
        cfg = DalleBartConfig(**{**BASE, **opts})
        model = DalleBart(cfg, seed=0, dtype=jnp.float32)
        flat = flatten_dict(jax.tree_util.tree_map(np.asarray, model.params))
        rng = np.random.default_rng(7)
        flat = {
            k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in sorted(flat.items())
        }
        params = unflatten_dict(flat)
        dec = io["decoder_input_ids"]
        out = {}
        for tag, ids, mask in (
            ("", io["input_ids"], io["attention_mask"]),
            ("_uncond", io["input_ids_uncond"], io["attention_mask_uncond"]),
        ):
            out["logits" + tag] = np.asarray(
                model(
                    ids, attention_mask=mask, decoder_input_ids=dec, params=params, train=False
                ).logits
            )
        folder = out_root / name
        model.save_pretrained(folder, params=params)
        np.savez_compressed(folder / "io.npz", **out)
        print(name, {k: v.shape for k, v in out.items()}, json.dumps(opts))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
