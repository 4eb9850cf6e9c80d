"""The ImageNet reproduction (paper Tables 1, 2 and 5) as one recipe; docs/reproduce.md explains it.

    python -m train.generate  --config configs/imagenet.py
    python -m train.iem       --config configs/imagenet.py:iem=ce     (and iem=re, iem=te)
    python -m explain.sample  --config configs/imagenet.py:iem=ce     (and re, te)
    python -m explain.codebook --config configs/imagenet.py
    python -m explain.report  --config configs/imagenet.py

`:runlocal` (e.g. `configs/imagenet.py:runlocal,iem=ce`) runs the same commands end to end on a
CPU in minutes: random weights for every model (a small VQGAN + cin transformer written to
WORKDIR/models), 11 classes, a few images each, narrow networks. It proves the plumbing, not the
numbers. Every path hangs off `workdir` (`--config.workdir=DIR` moves the whole run).
"""

import ml_collections

from configs import iem_base

# The authors' Table 5 design: source labels 10–20 except 15, target 30 − label.
PAPER_PAIRS = tuple((s, 30 - s) for s in range(10, 21) if s != 15)

_RUNLOCAL_IEM = {
    "ce": dict(width=16, depth=1, hidden=64),
    "re": dict(width=16, depth=1, hidden=64, se_hidden=4),
    "te": dict(width=32, depth=1, hidden=64, heads=2, mlp=64),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = iem_base.parse_arg(arg.replace("runlocal", "runlocal=1") if arg else arg)
    runlocal = opts.pop("runlocal", None) is not None
    arch = opts.pop("iem", "ce")
    settings = opts.pop("settings", "paper")
    if opts:
        raise ValueError(
            f"unknown configs/imagenet.py options {sorted(opts)}; expected runlocal, "
            "iem=ce|re|te and/or settings=paper|authors"
        )
    if arch not in _RUNLOCAL_IEM:
        raise ValueError(f"unknown IEM {arch!r}; expected iem=ce, iem=re or iem=te")

    # The IEM part is configs/iem_<arch>.py:variant=imagenet, so train.iem reads it unchanged.
    c = iem_base.get_config(arch, f"variant=imagenet,settings={settings}")
    default_workdir = "runs/imagenet_runlocal" if runlocal else "runs/imagenet"
    workdir = ml_collections.FieldReference(default_workdir)
    c.workdir = workdir
    c.variant = "imagenet_runlocal" if runlocal else "imagenet"
    c.iem_workdir = workdir + f"/iem_{arch}"
    c.vqgan = workdir + "/models/vqgan"  # written by train.generate from the checkpoint
    c.data.train = workdir + "/tokens/train"
    c.data.val = workdir + "/tokens/val"
    c.data.test = workdir + "/tokens/test"

    # Models: taming's cin_transformer run folder (GPT + first-stage VQGAN in one last.ckpt).
    c.checkpoint = "logs/2021-04-03T19-39-50_cin_transformer/checkpoints/last.ckpt"
    c.n_head = 0  # 0: read from the run's configs/*-project.yaml
    c.classifier = "resnet50-0676ba61.pth"  # torchvision ImageNet weights (Table 2)
    c.edit_classifier = "resnet18-f37072fd.pth"  # Table 5 uses ResNet18
    c.classifier_size = 224

    # Generation (the authors' script): 1000 / 300 / 50 per class, top_k 250, temperature 1;
    # dtype "bfloat16" roughly halves the transformer's cost on accelerators (taming: float32).
    c.generate = ml_collections.ConfigDict(
        dict(
            classes="all",
            train=1000,
            val=300,
            test=50,
            top_k=250,
            temperature=1.0,
            top_p=1.0,
            shard_size=1024,
            seed=0,
            test_png=True,
            dtype="float32",
        )
    )

    # Sample level (Table 2, Figure 4): TIS on the training split, T_concept with n 20, k 100.
    c.sample = ml_collections.ConfigDict(
        dict(
            n=20,
            k=100,
            n_samples=20,
            alpha=0.2,
            batch=256,
            curve_ns=tuple(range(5, 55, 5)),
            arrays_per_concept=50,  # test images a concept kept in arrays.npz (all 50 here)
            seed=0,
            shown_concepts=10,  # top_tokens.png (Figure 3): this many concepts' test images,
            shown_per_concept=8,  # this many each
        )
    )

    # Codebook level (Table 5): centre 4×4, Adam 0.01, 5000 steps, best of 11 logged points.
    c.codebook = ml_collections.ConfigDict(
        dict(
            pairs=PAPER_PAIRS,
            images_per_pair=50,
            steps=5000,
            learning_rate=0.01,
            log_every=500,
            region="center",
            batch=50,
            seed=0,
        )
    )

    if runlocal:
        c.checkpoint = "random"
        c.n_head = 2
        # a small random VQGAN (64 px, f4 → 16×16 grid, K = 64) and cin transformer
        c.random_vqgan = ml_collections.ConfigDict(
            dict(
                ch=32,
                ch_mult=(1, 2, 2),
                num_res_blocks=1,
                attn_resolutions=(16,),
                z_channels=16,
                embed_dim=16,
                n_embed=64,
                resolution=64,
            )
        )
        c.random_gpt = ml_collections.ConfigDict(dict(n_layer=1, n_embd=32))
        c.classifier = "random:resnet18:1000:8"
        c.edit_classifier = "random:resnet18:1000:8"
        c.classifier_size = 64
        c.generate.classes = ",".join(str(i) for i in range(10, 21))
        c.generate.update(train=12, val=4, test=4, top_k=20, shard_size=32)
        c.model.update(_RUNLOCAL_IEM[arch])
        c.train.update(batch_size=16, epochs=2, decay_every=1, dtype="float32")
        c.sample.update(n=5, k=10, n_samples=4, batch=64, curve_ns=(1, 5, 10))
        c.codebook.update(
            pairs=((10, 20), (11, 19)),
            images_per_pair=2,
            steps=12,
            learning_rate=0.05,
            log_every=4,
            batch=4,
        )
    return c
