"""The public API (`import cortex_jax as cx`) and the documented example of explaining a VQGM
built outside the project (docs/own_vqgm.py), whose planted signal the method must find."""

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cortex_jax as cx

REPO = Path(__file__).resolve().parents[1]


def test_every_public_name_is_there_and_is_what_the_type_checkers_read():
    """cortex_jax imports its public names on first use; its TYPE_CHECKING block (what mypy and
    readers see) must name the very same objects."""
    tree = ast.parse((REPO / "cortex_jax" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If))  # `if TYPE_CHECKING:`
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for a in node.names:
            module = importlib.import_module(node.module)
            seen[a.asname or a.name] = getattr(module, a.name)
    assert sorted(seen) == cx.__all__
    for name in cx.__all__:
        assert getattr(cx, name) is seen[name], name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cx.nope  # noqa: B018


def test_importing_the_package_imports_no_jax():
    """`python -m explain.…` and `import cortex_jax.core.…` pay for JAX, SciPy and matplotlib
    only where a command uses them (a second or more per command, dozens in the suite)."""
    code = "import sys, cortex_jax; print(sorted({'jax', 'scipy', 'matplotlib'} & {*sys.modules}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])


def test_a_bundle_names_what_an_experiment_lacks():
    class Tiny:
        codebook = np.eye(3, dtype=np.float32)

        def decode(self, e):
            return e

    models = cx.models_of(Tiny(), ["a", "b"])
    np.testing.assert_array_equal(models.decode(np.array([[[2]]]))[0, 0, 0], [0, 0, 1])
    with pytest.raises(ValueError, match="the Table 5 pair study needs predict, classifier"):
        cx.pair_study(models, np.zeros((1, 1, 1), int), [0], [1], np.ones((1, 1), bool), None)
    with pytest.raises(ValueError, match="generating images of 'a' needs sample"):
        models.sample_named("a", 2, 0)

    class WithEncoder(Tiny):
        def encode(self, px):  # (B, m·m) row-major ids, as VQGAN.encode returns them
            return np.arange(4)[None].repeat(len(px), 0)

    grids, sources, region = cx.start_from_image(cx.models_of(WithEncoder(), ["a"]), np.zeros(1))
    np.testing.assert_array_equal(grids, [[[0, 1], [2, 3]]])
    assert sources.tolist() == [-1] and region == "center"


def test_embed_checks_the_codebook_range():
    class Tiny:
        codebook = np.eye(3, dtype=np.float32)

        def decode(self, e):
            return e

    assert isinstance(Tiny(), cx.VQGMLike)
    np.testing.assert_array_equal(cx.embed(Tiny(), np.array([[[0, 2]]]))[0, 0, 1], [0, 0, 1])
    with pytest.raises(ValueError, match="token ids span 0..3; the codebook has 3 rows"):
        cx.embed(Tiny(), np.array([[[0, 3]]]))
    ids = np.array([[0, 2, 1, 0]])  # (B, m·m) row-major, as vq.encode returns them
    np.testing.assert_array_equal(cx.embed(Tiny(), ids), cx.embed(Tiny(), ids.reshape(1, 2, 2)))
    with pytest.raises(ValueError, match="do not form a square grid"):
        cx.embed(Tiny(), np.array([[0, 1, 2]]))


def test_the_cli_and_the_api_edit_with_the_same_learning_rate(entry_point):
    from absl import flags

    entry_point("explain.codebook")  # defines the flags

    assert flags.FLAGS["lr"].default == cx.SelectionConfig().learning_rate == 0.01


@pytest.mark.slow
def test_the_own_vqgm_example_finds_the_planted_signal(tmp_path):
    spec = importlib.util.spec_from_file_location("own_vqgm", REPO / "docs" / "own_vqgm.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(tmp_path)
    assert out["val_top1"] > 0.5  # 4 classes: chance is 0.25
    assert out["tis_share_on_the_signal_row"] > 0.3  # a blind TIS puts 0.25 on each row
    assert min(out["t_concept_share_of_own_tokens"]) >= 0.75  # each class's own tokens
    assert out["selected_tokens_of_the_target"] >= 0.5  # the edit writes the target's tokens
    assert out["edited_pixels_shape"] == [2, 16, 16, 3]
    # the library's edit experiment on the user's bundle raises the target for both images
    assert all(f["final"] > f["before"] for f in out["edit_f_target"])
    assert out["edit_files"] == ["progression.gif", "progression.png", "table.md", "tokens.json"]


def test_frozen_configs_come_from_config_sections_by_field_name():
    import ml_collections

    from cortex_jax.core.configs import from_section
    from cortex_jax.experiments.sample_level import SampleLevelConfig

    section = ml_collections.ConfigDict(dict(n=7, k=3, curve_ns=[1, 2], concepts_per_chunk=5))
    cfg = from_section(SampleLevelConfig, section, seed=4)
    assert (cfg.n, cfg.k, cfg.curve_ns, cfg.seed) == (7, 3, (1, 2), 4)
    assert cfg.n_samples == SampleLevelConfig().n_samples  # absent keys keep their defaults
    with pytest.raises(ValueError, match="SampleLevelConfig has no field 'nn'"):
        from_section(SampleLevelConfig, section, nn=1)
    with pytest.raises(ValueError, match="steps"):  # the dataclass's own checks still run
        from_section(cx.SelectionConfig, {"steps": 7, "log_every": 5})


def test_sample_level_configs_refuse_sizes_below_one():
    with pytest.raises(ValueError, match="n_samples=0; expected at least 1"):
        cx.SampleLevelConfig(n_samples=0)
    with pytest.raises(ValueError, match="test_per_concept=0; expected at least 1"):
        cx.StudyConfig(test_per_concept=0)
