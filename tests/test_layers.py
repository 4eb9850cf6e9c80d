"""The house's layers (docs/architecture.md): module-level imports inside cortex_jax run from
higher layers to lower ones only, algorithms receive models as callables (they import no model
module), and the library never imports the entry points. Imports inside functions are not
checked (the known exception: `checkpoints` ↔ `cin`/`vqgm`, issue 15)."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cortex_jax"
LAYERS = {  # higher numbers may import lower ones
    0: {"errors", "viz", "figures", "imagenet", "sharding", "data"},  # utilities
    1: {"vqgan", "cin", "maskgit", "dalle", "iem", "classifier", "vqgm"},  # models: no files
    2: {"checkpoints", "training", "generate"},  # io: model folders, checkpoints, shards
    3: {"tis", "selection", "evaluate", "stats"},  # the method: arrays and callables
    4: {"sample_level", "codebook_level", "bias", "recipe", "atlas", "toy"},  # experiments
    5: {"api", "__init__"},  # the public API
}
LAYER = {m: n for n, mods in LAYERS.items() for m in mods}
METHOD = LAYERS[3]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.parse(path.read_text()).body:  # module level only
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] in ("explain", "train"):
                out.add(parts[0])
            elif parts[0] == "cortex_jax":
                out |= {a.name for a in node.names} if len(parts) == 1 else {parts[1]}
        elif isinstance(node, ast.Import):
            out |= {
                a.name.split(".")[0] for a in node.names if a.name.startswith(("explain", "train"))
            }
    return out


MODULES = sorted(p for p in PKG.glob("*.py")) + [PKG / "toy" / "__init__.py"]


def test_every_module_has_a_layer():
    names = {p.stem for p in PKG.glob("*.py")} | {"toy"}
    assert names == set(LAYER), names ^ set(LAYER)


@pytest.mark.parametrize(
    "path",
    MODULES,
    ids=lambda p: p.stem if p.stem != "__init__" or p.parent == PKG else p.parent.name,
)
def test_imports_run_downwards(path):
    me = "toy" if path.parent.name == "toy" else path.stem
    for name in _imports(path):
        assert name not in ("explain", "train"), f"{me} imports the entry point {name}"
        if name in LAYER:
            assert LAYER[name] <= LAYER[me], (
                f"{me} (layer {LAYER[me]}) imports {name} (layer {LAYER[name]})"
            )
            if me in METHOD:
                assert name not in LAYERS[1], f"the algorithm {me} imports the model {name}"
