"""Our VQGAN against taming-transformers' own PyTorch modules, with random weights.

Needs the `conformance` extra (torch, taming-transformers); skips with a message otherwise.
The config differs from the fixtures on purpose: three levels, two residual blocks per level and
attention at the lowest level, so the decoder runs three block/attention pairs in a row.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="conformance extra not installed (needs torch)")
taming_model = pytest.importorskip(
    "taming.modules.diffusionmodules.model",
    reason="conformance extra not installed (needs taming-transformers)",
)
taming_quantize = pytest.importorskip("taming.modules.vqvae.quantize")

from cortex_jax.io.convert import (  # noqa: E402
    convert_taming_state_dict,
    infer_taming_config,  # noqa: E402
)
from cortex_jax.models.vqgan import VQGAN  # noqa: E402

DDCONFIG = dict(
    double_z=False,
    z_channels=32,
    resolution=32,
    in_channels=3,
    out_ch=3,
    ch=32,
    ch_mult=[1, 2, 2],
    num_res_blocks=2,
    attn_resolutions=[8],
    dropout=0.0,
)
N_EMBED, EMBED_DIM = 48, 16


class _TamingVQ(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = taming_model.Encoder(**DDCONFIG)
        self.decoder = taming_model.Decoder(**DDCONFIG)
        self.quantize = taming_quantize.VectorQuantizer(N_EMBED, EMBED_DIM, beta=0.25)
        self.quant_conv = torch.nn.Conv2d(DDCONFIG["z_channels"], EMBED_DIM, 1)
        self.post_quant_conv = torch.nn.Conv2d(EMBED_DIM, DDCONFIG["z_channels"], 1)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = _TamingVQ().eval()
    rng = np.random.default_rng(7)
    with torch.no_grad():
        for name, p in ref.named_parameters():  # move every value off its init (scales ≠ 1 …)
            scale = 1.0 if name.startswith("quantize") else 0.05
            p.add_(torch.from_numpy(scale * rng.standard_normal(p.shape).astype(np.float32)))
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    params = convert_taming_state_dict(sd)
    ours = VQGAN(infer_taming_config(params, resolution=DDCONFIG["resolution"]), params)
    return ref, ours


def test_encode_decode_match_taming(pair):
    ref, ours = pair
    pixels = np.tanh(np.random.default_rng(3).standard_normal((2, 3, 32, 32))).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(pixels)
        z_e = ref.quant_conv(ref.encoder(x))
        _, _, (_, _, idx) = ref.quantize(z_e)
        idx = idx.reshape(2, -1)
        z_q = ref.quantize.embedding(idx).reshape(2, 8, 8, EMBED_DIM).permute(0, 3, 1, 2)
        rec = ref.decoder(ref.post_quant_conv(z_q))
    nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(
        ours.encode_latents(pixels.transpose(0, 2, 3, 1)), nhwc(z_e), atol=1e-4, rtol=0
    )
    ids = ours.encode(pixels.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(ids, idx.numpy())
    np.testing.assert_array_equal(ours.embed(ids), nhwc(z_q))
    np.testing.assert_allclose(ours.decode_code(ids), nhwc(rec), atol=1e-4, rtol=0)
    assert len(np.unique(ids)) > 5  # the comparison covers many codes, not one
