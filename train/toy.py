"""Rebuild the toy world: `python -m train.toy --workdir runs/toy [--config configs/toy.py]`.

Stages (each skipped when its output folder exists, so a killed build resumes): VQGAN → pixel
judge → encoded prior dataset → prior → evaluation (report.json, samples.png). The workdir may
hold only what train.toy wrote there (its manifest, `io.folders`); anything else is refused in one
line before any training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from cortex_jax.core import errors
from cortex_jax.io import folders
from cortex_jax.io.images import save_grid
from cortex_jax.models.cin import SampleConfig
from cortex_jax.toy import load_toy_judge, load_toy_vqgm, train, world, write_encoded_dataset
from cortex_jax.toy.judge import JudgeConfig

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(Path(__file__).resolve().parents[1] / "configs" / "toy.py"), "Build config."
)
COMMAND = "train.toy"
_WORKDIR = flags.DEFINE_string("workdir", "runs/toy", "Where the models and report are written.")


def _bar(total: int, desc: str):
    bar = tqdm(total=total, desc=desc, dynamic_ncols=True)

    def update(step: int, metrics: dict[str, float]) -> None:
        bar.update(step - bar.n)
        if step % 10 == 0 or step == total:
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)

    return bar, update


def _stage(name: str, out: Path, fn) -> dict:
    """Runs fn() → (save(folder), stats) unless `out` holds a finished model; returns its stats."""
    stats_file = out / "stats.json"
    if (out / folders.WEIGHTS_NAME).exists() and stats_file.exists():
        print(f"{name}: found {out}, skipping")
    else:
        t0 = time.time()
        save, stats = fn()
        save(out)
        stats["seconds"] = round(time.time() - t0, 1)
        stats_file.write_text(json.dumps(stats, indent=2) + "\n")
    return json.loads(stats_file.read_text())


def build(config, workdir: Path) -> dict:
    # only its own files: a finished stage is reused, a file it did not write refused in one line
    folders.claim_output(workdir, COMMAND, "--workdir")

    def vqgan_stage():
        bar, cb = _bar(config.vqgan.steps, "vqgan")
        vq, s = train.train_vqgan(
            train.VQTrainConfig(**config.vqgan, seed=config.seed), progress=cb
        )
        bar.close()
        return (lambda out: folders.save_vqgan(vq, out)), s

    def judge_stage():
        bar, cb = _bar(config.judge.steps, "judge")
        jcfg = train.JudgeTrainConfig(**config.judge, seed=config.seed + 1)
        params, s = train.train_judge(jcfg, progress=cb)
        bar.close()
        return (lambda out: folders.write_model_folder(out, JudgeConfig().to_dict(), params)), s

    def prior_stage():
        vq = folders.read_vqgan_folder(workdir / "vqgan")
        n_classes = len(world.CLASS_NAMES)
        per_class = config.prior_data_per_class
        with tqdm(total=n_classes * per_class, desc="encode prior data") as bar:
            ds = write_encoded_dataset(
                vq,
                range(n_classes),
                per_class,
                workdir / "prior_data",
                seed=config.seed + 2,
                progress=lambda n: bar.update(n - bar.n),
            )
        tokens, labels, _ = ds.arrays()
        bar, cb = _bar(config.prior.steps, "prior")
        pcfg = train.PriorTrainConfig(**config.prior, seed=config.seed + 3)
        gcfg, params, s = train.train_prior(pcfg, tokens, labels, vq.config.n_embed, progress=cb)
        bar.close()
        return (lambda out: folders.write_model_folder(out, gcfg.to_dict(), params)), s

    stats = {
        name: _stage(name, workdir / name, fn)
        for name, fn in (("vqgan", vqgan_stage), ("judge", judge_stage), ("prior", prior_stage))
    }

    vqgm, judge = load_toy_vqgm(workdir), load_toy_judge(workdir)
    sc = SampleConfig(**config.sample)
    rec = train.recognition(vqgm, judge, config.eval_per_class, config.seed + 4, sc)
    names = [c.name for c in world.CONCEPTS]
    per_row = 8
    toks = vqgm.sample_tokens(np.repeat(np.arange(len(names)), per_row), jax.random.PRNGKey(7), sc)
    save_grid(workdir / "samples.png", np.asarray(vqgm.decode(toks)), per_row, names, scale=3)
    report = {
        "stats": stats,
        "vqgan_eval": train.evaluate_vqgan(vqgm.vqgan, seed=config.seed + 5),
        "generated_recognised_by_judge": rec,
        "reconstructions_recognised_by_judge": train.reconstruction_recognition(
            vqgm.vqgan, judge, config.eval_per_class, config.seed + 6
        ),
        "sampling": dict(config.sample),
        "training_seconds": round(sum(s["seconds"] for s in stats.values()), 1),
    }
    (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    folders.finish_output(workdir, COMMAND)
    return report


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    with errors.one_line_errors():
        report = build(_CONFIG.value, Path(_WORKDIR.value))
    rec = report["generated_recognised_by_judge"]
    print(f"generated images recognised by the pixel judge: {rec['mean']:.1%}")
    print(f"wrote {_WORKDIR.value}/report.json and samples.png")


if __name__ == "__main__":
    app.run(main)
