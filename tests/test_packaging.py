"""The accelerator extras install the JAX that the core pins, and the docs give their commands."""

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lines(value: str) -> list[str]:
    return [x.strip() for x in value.splitlines() if x.strip()]


def test_accelerator_extras_pin_jax_as_the_core_does_and_the_docs_name_them():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    (core,) = [r for r in _lines(cfg["options"]["install_requires"]) if r.startswith("jax")]
    bound = core.removeprefix("jax")  # e.g. ">=0.4.30"
    extras = cfg["options.extras_require"]
    assert _lines(extras["cuda12"]) == [f"jax[cuda12]{bound}"]
    assert _lines(extras["tpu"]) == [f"jax[tpu]{bound}"]
    libtpu = "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
    for doc in ("README.md", "docs/reproduce.md"):
        text = (REPO / doc).read_text()
        assert 'pip install -e ".[cuda12]"' in text, doc
        assert f'pip install -e ".[tpu]" {libtpu}' in text, doc
