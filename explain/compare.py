"""Attribution methods in one table: `python -m explain.compare` (toy world by default).

Writes OUT/compare.json ({"settings", "methods": {NAME: {METRIC: {"value", "ci"}}}}),
OUT/compare.md, OUT/cascade.json and OUT/curves/ (PNG, SVG, CSV); see
cortex_jax/experiments/compare.py for every metric. OUT/timings.json holds the wall seconds of
each stage (bench/compare.py prints them).
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags

from cortex_jax import toy
from cortex_jax.core import errors
from cortex_jax.experiments import compare

_D = compare.CompareConfig()
_METHODS = flags.DEFINE_string("methods", ",".join(_D.methods), "Methods, comma-separated.")
_OUT = flags.DEFINE_string("out", "runs/compare", "Output folder.")
_IEM = flags.DEFINE_enum("iem", "ce", ["ce", "re", "te"], "Information extractor.")
_PER = flags.DEFINE_integer("per-concept", 4, "Encoded images (with object masks) per concept.")
_TRAIN = flags.DEFINE_integer("train-per-concept", 16, "Images per concept, permuted-label IEM.")
_EPOCHS = flags.DEFINE_integer("permutation-epochs", _D.permutation_epochs, "0 skips the check.")
_STEPS = flags.DEFINE_integer("steps", _D.steps, "Curve points.")
_N_SAMPLES = flags.DEFINE_integer("n-samples", _D.n_samples, "SmoothGrad noise samples.")
_IG = flags.DEFINE_integer("ig-steps", _D.ig_steps, "Integrated-gradients steps.")
_CASCADE = flags.DEFINE_bool("cascade", _D.cascade, "Every randomisation stage (else the last).")
_BOOT = flags.DEFINE_integer("n-boot", _D.n_boot, "Bootstrap resamples.")
_SEED = flags.DEFINE_integer("seed", _D.seed, "Random seed.")


def main(argv):
    del argv
    with errors.one_line_errors():
        out = errors.writable_folder(_OUT.value)
        methods = tuple(m.strip() for m in _METHODS.value.split(",") if m.strip())
        cfg = dataclasses.replace(
            _D, methods=methods, steps=_STEPS.value, n_samples=_N_SAMPLES.value,
            ig_steps=_IG.value, cascade=_CASCADE.value, permutation_epochs=_EPOCHS.value,
            n_boot=_BOOT.value, seed=_SEED.value,
        )  # fmt: skip
        compare.check_config(cfg)
        clock = compare.StageClock()
        models = toy.models(_IEM.value)
        icfg, variables, _ = toy.load_toy_iem(_IEM.value)
        clock("loading the toy models")
        concepts = range(len(models.class_names))
        data = toy.ground_truth(models, concepts, _PER.value, _SEED.value)
        train = toy.ground_truth(models, concepts, _TRAIN.value, _SEED.value + 1)
        clock("sampling the images")
        result = compare.run(models, cfg, out, data, (icfg, variables), train, clock)
        (out / "timings.json").write_text(json.dumps(clock.seconds, indent=1) + "\n")
        print(compare.markdown(result))
        print(f"wrote {out / 'compare.json'}, compare.md, cascade.json and curves/")


if __name__ == "__main__":
    app.run(main)
