"""Train an information extractor: `python -m train.iem --config configs/iem_ce.py:variant=toy`.

Runs unchanged on one CPU, one GPU, 8 devices or a multi-host pod (jax.distributed starts when
the environment declares several processes). Resumes from WORKDIR/checkpoints/latest after a
kill; writes WORKDIR/metrics.jsonl and, at the end, the best-validation-loss model to WORKDIR/iem.
For the toy variant the generated token datasets are sampled first if missing. The ImageNet
recipe: `--config configs/imagenet.py:iem=ce` (WORKDIR = the recipe's workdir/iem_ce). WORKDIR
may be a gs:// URL: checkpoints, metrics, TensorBoard events and the IEM are written to the bucket.
"""

from __future__ import annotations

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from cortex_jax import toy
from cortex_jax.core import errors, paths, sharding
from cortex_jax.core.progress import Progress
from cortex_jax.experiments import training
from cortex_jax.experiments.generate import generate_dataset
from cortex_jax.io import folders, shards, sources
from cortex_jax.models import iem

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/iem_{ce,re,te}.py:variant=…")
_WORKDIR = flags.DEFINE_string("workdir", None, "Defaults to runs/iem_<arch>_<variant>.")
_FRESH = flags.DEFINE_bool(
    "fresh", False, "Delete this workdir's earlier run (checkpoints, metrics) and start over."
)
flags.mark_flag_as_required("config")
COMMAND = "train.iem"


def _dataset(folder: str, per_class: int, seed: int, config) -> shards.TokenDataset:
    """The token dataset at `folder`. With generate_if_missing, always through generate_dataset,
    which refuses a stored dataset made with other settings (its meta.json names them), finishes
    one an interrupted run left incomplete, and skips the shards that are already there."""
    if config.data.generate_if_missing:
        vqgm = toy.load_toy_vqgm()
        n = config.n_classes * per_class
        with tqdm(total=n, desc=f"generate {folder}", unit="img") as bar:
            generate_dataset(
                vqgm,
                range(config.n_classes),
                per_class,
                folder,
                seed,
                toy.TOY_SAMPLING,
                progress=lambda k: bar.update(k - bar.n),
            )
    return shards.TokenDataset.open(folder)


def _check_workdir(workdir: str | os.PathLike) -> None:
    """Refuses a --workdir holding files train.iem did not write, before any work. A workdir of an
    earlier version (run.json but no manifest) is adopted: its files are this command's."""
    root = paths.of(workdir, "--workdir")
    if (root / training.RUN_NAME).is_file() and not (root / folders.OWNER_NAME).exists():
        if jax.process_index() == 0:
            folders.finish_output(root, COMMAND)
    folders.check_output(root, COMMAND, "--workdir", remote_ok=True)


def _vqgan_name(vqgan: str, iem_folder) -> str:
    """How the IEM folder names its VQGAN: a folder by its path relative to the IEM folder (the
    same name in a local workdir and on a bucket, and after the workdir moves), else as given."""
    return paths.relative(vqgan, iem_folder) if paths.of(vqgan).is_dir() else vqgan


def run(config, workdir: str | os.PathLike, fresh: bool = False) -> dict:
    sharding.maybe_initialize_distributed()
    workdir = paths.of(workdir, "--workdir")
    _check_workdir(workdir)
    train_ds = _dataset(config.data.train, config.data.get("train_per_class", 0), 0, config)
    val_ds = _dataset(config.data.val, config.data.get("val_per_class", 0), 1, config)
    vq = sources.load_vqgan(config.vqgan)
    model_config = iem.IEMConfig(config.arch, config.n_classes, **config.model)
    tcfg = training.TrainConfig(**config.train)
    if jax.process_index() == 0:
        folders.claim_output(workdir, COMMAND, "--workdir", remote_ok=True)
    # A context manager, so the bar is closed before an error's one line is printed. A tqdm bar
    # on a terminal; in a log, a line a minute with steps/s and ETA (core.progress).
    with Progress(f"train {config.arch}", unit="step", enabled=jax.process_index() == 0) as bar:

        def progress(step, total, m):
            bar.update_to(step, total, loss=f"{m['loss']:.3f}", img_s=f"{m['images_per_s']:.0f}")

        def resumed(step):
            tqdm.write(f"resumed from step {step}")
            bar.base = bar.done = step  # the rate and ETA count this run's steps only

        _, best = training.fit_iem(
            model_config,
            tcfg,
            train_ds,
            val_ds,
            vq.codebook,
            workdir,
            progress,
            fresh=fresh,
            vqgan=_vqgan_name(config.vqgan, workdir / "iem"),
            on_resume=resumed,
        )
    if jax.process_index() == 0:
        folders.finish_output(workdir, COMMAND)
    return best


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    config = _CONFIG.value
    workdir = paths.of(
        _WORKDIR.value or config.get("iem_workdir") or f"runs/iem_{config.arch}_{config.variant}",
        "--workdir",
    )
    with errors.one_line_errors():
        best = run(config, workdir, _FRESH.value)
    if best:
        print(
            f"best validation (step {best['step']}): loss {best['val_loss']:.4f}, "
            f"top-1 {best['val_top1']:.2%}, top-5 {best['val_top5']:.2%}"
        )
    print(f"wrote {workdir / 'iem'}")


if __name__ == "__main__":
    app.run(main)
