"""The one registry of VQGM families: name → loader, sampler settings, bundle builder.

Every entry point (`train.generate`, `explain.bias --dalle`, `explain.compare`, `explain.atlas`,
`explain.codebook --edit-model`) and the recipe (`recipe.load_vqgm`, `recipe.generate`, Table 5's
`family_edit` row) ask this registry for a family and never branch on its name
(`family_editor`: a family's own region re-sampling as a Table 5 editor). Adding a family is one
model module (satisfying `models.vqgm.ClassConditional` or `PromptConditional`), one io loader
and one `register(Family(...))`.

Two kinds (`Family.conditioning`): "class" families sample `(class ids, key)` and "prompt"
families (text to image) sample `(prompt, n, seed)`. A command that takes one kind asks
`get(name, kind, use)`, which refuses the other in one line before anything loads.

Registered here: `imagenet` (taming's cin transformer), `maskgit`, `llamagen` (class) and
`dallebart` (prompt); the toy world registers `toy` itself (`cortex_jax.toy`, a layer above this
one). A name that is not registered but is a folder loads as the toy world's layout (`--model
runs/toy/weights`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np

from cortex_jax.core import imagenet, trees
from cortex_jax.experiments.bundle import Models, as_grids
from cortex_jax.io import sources
from cortex_jax.models import cin, dalle, llamagen, maskgit
from cortex_jax.models.vqgm import ClassConditional, PromptConditional, ResamplesRegion

Editor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
Conditioning = Literal["class", "prompt"]
_KIND = {"class": "class-conditional", "prompt": "prompt-conditioned (text-to-image)"}


@dataclasses.dataclass(frozen=True)
class LoadArgs:
    """What a loader may read; each family's loader names what it needs when it is missing.

    Attributes:
      checkpoint: the family's main file or folder (cin last.ckpt, MaskGIT folder, GPT .pt,
        DalleBart folder or Hugging Face repo id).
      vq_checkpoint: a separate tokenizer (LlamaGen's vq_ds16_c2i.pt; DalleBart's VQGAN, any
        `load_vqgan` source, default imagenet_f16_16384).
      config: a model config the weights do not record (LlamaGen: a preset or ModelArgs JSON).
      n_head: attention heads, where neither the file nor a sidecar records them (cin).
      tokenizer: a text tokenizer's folder (DalleBart: the dalle-mini repo's BART files).
    """

    checkpoint: str | None = None
    vq_checkpoint: str | None = None
    config: str | None = None
    n_head: int | None = None
    tokenizer: str | None = None


def default_bundle(
    vqgm: ClassConditional,
    sampling: Any,
    predict: Any = None,
    classifier: Any = None,
    decode_batch: int = 64,
) -> Models:
    """The experiments' bundle of a class-conditional VQGM: its codebook, decoding (batched),
    class names and resolver, sampling `(class ids, seed)` with `sampling`, the encoder, and the
    prior's infill (`infill_tokens`, the faithfulness curves' generator removal) when the model
    has one (cin priors do; MaskGIT and LlamaGen do not)."""
    vq = vqgm.vqgan

    def sample(class_ids: np.ndarray, seed: int) -> np.ndarray:
        key = jax.random.PRNGKey(seed)
        return np.asarray(vqgm.sample_tokens(np.asarray(class_ids), key, sampling))

    return Models(
        codebook=np.asarray(vqgm.codebook),
        decode=functools.partial(vq.decode_pixels, batch=decode_batch),
        class_names=tuple(vqgm.class_names),
        grid_size=vqgm.grid_size,
        image_size=vq.config.resolution,
        predict=predict,
        classifier=classifier,
        sample=sample,
        encode=lambda px: as_grids(vq.encode(px)),
        resolve=vqgm.class_id,
        name=vqgm.name,
        infill=getattr(vqgm, "infill_tokens", None),
    )


def prompt_bundle(
    model: PromptConditional,
    sampling: Any,
    predict: Any = None,
    classifier: Any = None,
    decode_batch: int | None = None,
) -> Models:
    """The experiments' bundle of a prompt-conditioned VQGM: its codebook, decoding, the
    encoder and `sample_prompt` `(prompt, n, seed)` with `sampling`; no class names (a bias
    audit trains its own IEM, or names one whose classes become the bundle's)."""
    vq = model.vqgan

    def sample(prompt: str, n: int, seed: int) -> np.ndarray:
        return np.asarray(model.sample_prompt(prompt, n, seed, sampling))

    return Models(
        codebook=np.asarray(model.codebook),
        decode=functools.partial(vq.decode_pixels, batch=decode_batch),
        class_names=(),
        grid_size=model.grid_size,
        image_size=vq.config.resolution,
        predict=predict,
        classifier=classifier,
        sample_prompt=sample,
        encode=lambda px: as_grids(vq.encode(px)),
        name=model.name,
    )


@dataclasses.dataclass(frozen=True)
class Family:
    """One VQGM family.

    Attributes:
      name: what `--model` / `config.family` says.
      load: LoadArgs → the model, a `ClassConditional` (or a `PromptConditional` when
        `conditioning` is "prompt"), raising one line naming the files it needs.
      sampling: the default sampler settings, a frozen dataclass (the family's SampleConfig);
        `settings()` overrides its fields by name.
      bundle: (model, sampling, predict, classifier) → the experiments' `Models`.
      concepts: how many leading classes `--classes concepts` means (None: all).
      encoded: a writer of encoded procedural images, when the family has such a world
        (vqgan, class_ids, per_class, out, seed, shard_size, progress) → dataset.
      random: (recipe config, seed) → a model with random weights, for `:runlocal` recipes.
      edit_row: the Table 5 row name of the family's own region re-sampling, if it has one.
      edit_note: what that row is, for table5.md; `{family}` and the sampler settings' fields
        (`{num_iter}`, …) are filled in.
      conditioning: "class" (sampled from class ids) or "prompt" (from text prompts).
      classifier: () → the family's own pixel classifier (pixels → probabilities), which a
        recipe config names as `classifier = "family"` (the toy world's judge), if it has one.
    """

    name: str
    load: Callable[[LoadArgs], Any]
    sampling: Any
    bundle: Callable[..., Models] = default_bundle
    concepts: int | None = None
    encoded: Callable[..., Any] | None = None
    random: Callable[[Any, int], ClassConditional] | None = None
    edit_row: str | None = None
    edit_note: str = "{family}'s own re-sampling of the region"
    conditioning: Conditioning = "class"
    classifier: Callable[[], Callable[[np.ndarray], Any]] | None = None

    def describe_edit(self, sampling: Any) -> str:
        """table5.md's note on the `edit_row` row, with `sampling` filled in."""
        text = self.edit_note.format(family=self.name, **dataclasses.asdict(sampling))
        return f"{self.edit_row}: {text}."

    def settings(self, overrides: Mapping[str, Any], strict: bool = True) -> Any:
        """`sampling` with the fields in `overrides` replaced (None values ignored). With
        `strict`, a key that is no field of this family's settings is one ValueError."""
        fields = {f.name for f in dataclasses.fields(self.sampling)}
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - fields)
        if strict and unknown:
            raise ValueError(
                f"{', '.join(unknown)} do not apply to --model {self.name}; its sampler "
                f"settings are {', '.join(sorted(fields))}"
            )
        return dataclasses.replace(self.sampling, **{k: v for k, v in given.items() if k in fields})


_REGISTRY: dict[str, Family] = {}


def class_ids(family: Family, vqgm: Any, spec: str) -> list[int]:
    """train.generate's --classes: 'all', 'concepts' (the family's first `concepts` classes, the
    toy world's 14) or comma-separated names; refused in one line when it names no class (an
    empty dataset would block its folder) or the family is not class-conditional."""
    _check_kind(family, "class", "--classes")
    if spec in ("all", "concepts"):
        n = family.concepts if spec == "concepts" and family.concepts else None
        ids = list(range(n or len(vqgm.class_names)))
    else:
        ids = [vqgm.class_id(c.strip()) for c in spec.split(",") if c.strip()]
    if not ids:
        raise ValueError(
            f"--classes {spec!r} names no class; expected 'all', 'concepts' or comma-separated "
            "class names"
        )
    return ids


def prompts(family: Family, spec: str | None, classes_given: bool) -> list[str] | None:
    """train.generate's --prompts "a|b|c" for a prompt family (None for a class family, which
    takes --classes), each prompt once; anything else is one ValueError, before a model loads."""
    if family.conditioning == "class":
        if spec is not None:
            raise ValueError(
                f"--prompts with --model {family.name}, a class-conditional family; it takes "
                "--classes"
            )
        return None
    if classes_given:
        raise ValueError(
            f"--classes with --model {family.name}, a prompt-conditioned family; it takes "
            '--prompts "a|b|c"'
        )
    texts = [p.strip() for p in (spec or "").split("|") if p.strip()]
    if not texts or len(set(texts)) != len(texts):
        raise ValueError(
            f"--model {family.name} needs --prompts with distinct prompts separated by |, e.g. "
            f'--prompts "a red car|a blue car"; got {spec!r}'
        )
    return texts


def register(family: Family, replace: bool = False) -> Family:
    """Adds `family` under its name (a second registration of a name is refused unless
    `replace`); returns it."""
    if family.name in _REGISTRY and not replace:
        raise ValueError(f"a VQGM family named {family.name!r} is already registered")
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    """Removes a family (tests register their own and clean up)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """The registered family names."""
    return sorted(_REGISTRY)


def _check_kind(family: Family, conditioning: Conditioning | None, use: str) -> Family:
    if conditioning is not None and family.conditioning != conditioning:
        having = [n for n in names() if _REGISTRY[n].conditioning == conditioning]
        raise ValueError(
            f"{use} takes a {_KIND[conditioning]} family ({', '.join(having)}); "
            f"{family.name!r} is {_KIND[family.conditioning]}"
        )
    return family


def get(name: str, conditioning: Conditioning | None = None, use: str = "--model") -> Family:
    """The family registered as `name`; a folder not registered by name reads as the toy
    world's layout (its family with the folder as checkpoint); else one ValueError. With
    `conditioning`, a family of the other kind is one ValueError naming `use` (the flag or
    command asking) and the families it takes."""
    return _check_kind(_lookup(name), conditioning, use)


def _lookup(name: str) -> Family:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if Path(name).is_dir() and "toy" in _REGISTRY:
        toy = _REGISTRY["toy"]
        folder = name
        return dataclasses.replace(
            toy, load=lambda a: toy.load(dataclasses.replace(a, checkpoint=folder))
        )
    raise ValueError(
        f"unknown model {name!r}; expected one of {', '.join(names())} or a folder laid out "
        "like the toy weights"
    )


def region_editor(vqgm: ClassConditional, key: jax.Array, sampling: Any = None) -> Editor | None:
    """A Table 5 editor `(base, sources, targets, mask) → grids` from the model's own region
    re-sampling (`ResamplesRegion`), or None when the family has none."""
    if not isinstance(vqgm, ResamplesRegion):
        return None
    model: Any = vqgm
    if sampling is None:
        return lambda b, s, t, m: np.asarray(model.resample_region(b, m, t, key))
    return lambda b, s, t, m: np.asarray(model.resample_region(b, m, t, key, sampling))


def edit_family(name: str, overrides: Mapping[str, Any] | None = None) -> tuple[Family, Any]:
    """The family `name` and its sampler settings with `overrides`, when it has a region
    re-sampling of its own (`edit_row`); else one ValueError naming those that have one. Reads
    no file: a command checks its flags with it before any model loads."""
    family = get(name, "class", "--edit-model")
    if family.edit_row is None:
        having = [n for n in names() if _REGISTRY[n].edit_row]
        raise ValueError(
            f"{name!r} has no region re-sampling of its own; families with one: {', '.join(having)}"
        )
    return family, family.settings(overrides or {})


def family_editor(
    name: str,
    args: LoadArgs,
    codebook: Any,
    key: jax.Array,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[str, Editor, str]:
    """(Table 5 row, editor, note) of family `name`'s own region re-sampling, its model loaded
    from `args` and sampled with its settings plus `overrides`. Its tokenizer must be the one
    the IEM reads (`codebook`, the bundle's (K, d) rows), else one ValueError."""
    family, sampling = edit_family(name, overrides)
    vqgm = family.load(args)
    if not np.array_equal(np.asarray(vqgm.codebook), np.asarray(codebook)):
        source = args.vq_checkpoint or args.checkpoint
        raise ValueError(
            f"the {name} model's tokenizer is not the --vqgan the IEM reads; pass --vqgan {source}"
        )
    editor = region_editor(vqgm, key, sampling)
    if editor is None:
        raise ValueError(f"the {name} model has no resample_region; its family names {name!r}")
    assert family.edit_row is not None  # edit_family checked
    return family.edit_row, editor, family.describe_edit(sampling)


# ----------------------------------------------------------------------------- the families


def _need(args: LoadArgs, field: str, message: str) -> str:
    value = getattr(args, field)
    if not value:
        raise ValueError(message)
    return str(value)


def _load_cin(args: LoadArgs) -> ClassConditional:
    path = _need(
        args,
        "checkpoint",
        "--model imagenet needs --checkpoint: taming-transformers' "
        "2021-04-03T19-39-50_cin_transformer (checkpoints/last.ckpt with its configs/ "
        "folder beside, from the taming-transformers README), e.g. --checkpoint "
        "logs/2021-04-03T19-39-50_cin_transformer/checkpoints/last.ckpt",
    )
    if not Path(path).exists():
        raise FileNotFoundError(
            f"cin transformer checkpoint not found: {path}; download taming-"
            "transformers' 2021-04-03T19-39-50_cin_transformer (README, 'ImageNet class-"
            "conditional'), unpack it so that checkpoints/last.ckpt and configs/ sit side by "
            "side, and pass --config.checkpoint=PATH/checkpoints/last.ckpt"
        )
    names = [c.name for c in imagenet.classes()]
    return sources.load_cin_vqgm(path, names, args.n_head or None)


def random_cin(config: Any, seed: int = 0) -> ClassConditional:
    """A VQGAN + cin transformer with random weights (`trees.random_like`), shaped by
    config.random_vqgan/random_gpt: the runlocal stand-in for taming's checkpoint (ImageNet's
    1000 class names, class tokens at ids 0..999 of the shared vocabulary, as in taming)."""
    from cortex_jax.models.vqgan import VQGAN, VQGANConfig
    from cortex_jax.models.vqgan import init_params as vqgan_init_params
    from cortex_jax.models.vqgm import ClassConditionalVQGM

    vcfg = VQGANConfig.from_dict(dict(config.random_vqgan))
    key = jax.random.PRNGKey(seed)  # only shapes are taken from the initialisers
    vq = VQGAN(vcfg, trees.random_init(lambda: vqgan_init_params(vcfg, key), seed))
    class_names = tuple(c.name for c in imagenet.classes())
    m = vcfg.grid_size
    gcfg = cin.GPTConfig(
        vocab_size=max(len(class_names), vcfg.n_embed),
        block_size=m * m,
        n_head=config.n_head,
        image_vocab_size=vcfg.n_embed,
        n_classes=len(class_names),
        **dict(config.random_gpt),
    )
    gparams = trees.random_init(lambda: cin.init_params(gcfg, key), seed + 1)
    return ClassConditionalVQGM("imagenet-random", vq, gcfg, gparams, class_names)


def _load_maskgit(args: LoadArgs) -> ClassConditional:
    folder = _need(
        args,
        "checkpoint",
        "--model maskgit needs --checkpoint DIR: the folder holding MaskGIT's "
        "tokenizer_imagenet256_checkpoint and maskgit_imagenet256_checkpoint (docs/maskgit.md)",
    )
    return sources.load_maskgit(folder)


def _load_llamagen(args: LoadArgs) -> ClassConditional:
    message = (
        "--model llamagen needs --checkpoint GPT.pt and --vq-checkpoint VQ.pt: "
        "LlamaGen's c2i_*.pt and vq_ds16_c2i.pt (docs/llamagen.md)"
    )
    gpt, vq = _need(args, "checkpoint", message), _need(args, "vq_checkpoint", message)
    return sources.load_llamagen(gpt, vq, config=args.config)


def random_llamagen(config: Any, seed: int = 0) -> ClassConditional:
    """A LlamaGen tokenizer + GPT with random weights (`trees.random_like`), shaped by
    config.random_tokenizer (a `llamagen.TokenizerConfig`'s fields) and config.random_gpt
    (`llamagen.GPTConfig`'s), with ImageNet's 1000 class names: the `:runlocal` stand-in for
    the released files."""
    tcfg = llamagen.TokenizerConfig(**dict(config.random_tokenizer))
    key = jax.random.PRNGKey(seed)  # only shapes are taken from the initialisers
    f = tcfg.downsample_factor
    module, pixels = llamagen.TokenizerModule(tcfg), np.zeros((1, f, f, 3), np.float32)
    tok_params = trees.random_init(lambda: module.init(key, pixels)["params"], seed)
    tok = llamagen.LlamaGenTokenizer(tcfg, tok_params)
    class_names = tuple(c.name for c in imagenet.classes())
    m = tok.grid_size
    gcfg = llamagen.GPTConfig(
        **dict(config.random_gpt),
        vocab_size=tcfg.codebook_size,
        block_size=m * m,
        num_classes=len(class_names),
    )
    params = trees.random_like(llamagen.gpt_param_shapes(gcfg), seed + 1)
    return llamagen.LlamaGenVQGM("llamagen-random", tok, gcfg, params, class_names)


IMAGENET = register(
    # The authors' ImageNet sampling (taming's sample_fast.py defaults).
    Family(
        "imagenet",
        _load_cin,
        cin.SampleConfig(temperature=1.0, top_k=250, top_p=1.0),
        random=random_cin,
    )
)
MASKGIT = register(
    Family(
        "maskgit",
        _load_maskgit,
        maskgit.SampleConfig(12, 4.5),
        edit_row="maskgit_edit",
        edit_note="MaskGIT's own editing, the region re-masked and re-decoded for the target "
        "class ({num_iter} iterations from the 3rd)",
    )
)
LLAMAGEN = register(
    # LlamaGen's sample_c2i.py defaults
    Family(
        "llamagen",
        _load_llamagen,
        llamagen.SampleConfig(),
        random=random_llamagen,
        edit_row="llamagen_resample",
        edit_note="LlamaGen's own re-sampling of the region: its positions drawn in raster "
        "order for the target class, the kept tokens teacher-forced (CFG {cfg_scale}, top-k "
        "{top_k})",
    )
)


def _load_dallebart(args: LoadArgs) -> PromptConditional:
    message = (
        "--model dallebart needs --checkpoint (a DalleBart folder or repo id, e.g. "
        "dalle-mini/dalle-mini) and --tokenizer DIR (the dalle-mini repo's BART tokenizer files)"
    )
    checkpoint, tokenizer = _need(args, "checkpoint", message), _need(args, "tokenizer", message)
    if not Path(tokenizer).is_dir():
        raise FileNotFoundError(f"--tokenizer folder not found: {tokenizer}")
    vqgan = args.vq_checkpoint or "imagenet_f16_16384"
    return sources.load_dallebart_vqgm(checkpoint, tokenizer, vqgan)


DALLEBART = register(
    # dalle-mini's generation defaults: super-conditioning 10, top-k 50
    Family(
        "dallebart",
        _load_dallebart,
        dalle.SampleConfig(),
        bundle=prompt_bundle,
        conditioning="prompt",
    )
)


def from_dallebart(
    dallebart: str | os.PathLike,
    tokenizer: str | os.PathLike,
    vqgan: str | os.PathLike = "imagenet_f16_16384",
    condition_scale: float = 10.0,
) -> Models:
    """A text-to-image bundle through the registry's `dallebart` family: DalleBart (folder or
    repo id) samples `(prompt, n, seed)` with super-conditioning, its BART tokenizer files read
    the prompts, the VQGAN decodes. No IEM and no classifier: the bias audit trains its own."""
    family = get("dallebart", "prompt", "from_dallebart")
    args = LoadArgs(checkpoint=str(dallebart), vq_checkpoint=str(vqgan), tokenizer=str(tokenizer))
    sampling = family.settings({"condition_scale": condition_scale})
    return family.bundle(family.load(args), sampling)
