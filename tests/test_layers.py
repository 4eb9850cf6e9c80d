"""The house's layers (docs/architecture.md), read from the tree: every import of ours inside
cortex_jax, at module level or inside a function, runs along an allowed arrow; the models and the
method touch no files; the library never imports the entry points."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cortex_jax"
# layer -> the layers it may import (itself included). `api` is the package's top (__init__, api).
ALLOWED = {
    "core": {"core"},
    "models": {"core", "models"},
    "method": {"core", "method"},
    "io": {"core", "models", "io"},
    "figures": {"core", "io", "figures"},
    "experiments": {"core", "models", "method", "io", "figures", "experiments"},
    "toy": {"core", "models", "method", "io", "figures", "experiments", "toy"},
    "api": {"core", "models", "method", "io", "figures", "experiments", "toy", "api"},
}
# what a module that touches no files must not import
FILE_MODULES = {"os", "pathlib", "json", "msgpack", "pickle", "zipfile", "shutil", "PIL", "io"}
FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "msgpack_restore"}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return "api" if len(rel.parts) == 1 else rel.parts[0]


def _ours(node: ast.AST) -> list[str]:
    """The dotted cortex_jax modules (or 'explain'/'train') an import statement names."""
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        parts = node.module.split(".")
        if parts[0] in ("explain", "train"):
            return [parts[0]]
        if parts[0] == "cortex_jax":
            if len(parts) == 1:
                return [f"cortex_jax.{a.name}" for a in node.names]
            return [node.module]
    if isinstance(node, ast.Import):
        return [
            a.name for a in node.names if a.name.split(".")[0] in ("cortex_jax", "explain", "train")
        ]
    return []


def _target_layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "cortex_jax" or len(parts) == 1:
        return None
    return parts[1] if parts[1] in ALLOWED and parts[1] != "api" else "api"


MODULES = sorted(PKG.rglob("*.py"))


def test_every_module_lives_in_a_layer():
    for p in MODULES:
        assert layer_of(p) in ALLOWED, p
    flat = {p.stem for p in PKG.glob("*.py")}
    assert flat == {"__init__", "api"}, f"modules outside the layers: {flat - {'__init__', 'api'}}"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        for name in _ours(node):
            yield node.lineno, name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_run_along_the_arrows(path):
    me = layer_of(path)
    for line, name in _imports(path):
        assert name.split(".")[0] not in ("explain", "train"), (
            f"{path.name}:{line} imports the entry point {name}"
        )
        target = _target_layer(name)
        if target is not None:
            assert target in ALLOWED[me], f"{path.relative_to(PKG)}:{line} ({me}) imports {name}"


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if layer_of(p) in ("models", "method")],
    ids=lambda p: str(p.relative_to(PKG)),
)
def test_models_and_method_touch_no_files(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad = {a.name.split(".")[0] for a in node.names} & FILE_MODULES
            assert not bad, f"{path.name}:{node.lineno} imports {bad}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            assert node.module.split(".")[0] not in FILE_MODULES, (
                f"{path.name}:{node.lineno} imports from {node.module}"
            )
            assert not (
                node.module == "flax" and any(a.name == "serialization" for a in node.names)
            )
        elif isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            assert name not in FILE_CALLS, f"{path.name}:{node.lineno} calls {name}"


def test_the_checker_sees_a_wrong_arrow_and_a_file(tmp_path):
    """The rules above bite: a method module importing a model, and a model reading a file."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from cortex_jax.models import iem\n    return open('x')\n")
    names = [n for _, n in _imports(bad)]
    assert names == ["cortex_jax.models"]
    assert _target_layer(names[0]) not in ALLOWED["method"]
    calls = [n.func.id for n in ast.walk(ast.parse(bad.read_text())) if isinstance(n, ast.Call)]
    assert set(calls) & FILE_CALLS


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_modules_say_what_they_are_for_and_public_functions_are_typed(path):
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc) > 40, f"{path.relative_to(PKG)} has no module docstring"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            args = node.args.args + node.args.kwonlyargs
            untyped = [a.arg for a in args if a.annotation is None and a.arg not in ("self", "cls")]
            assert not untyped, f"{path.name}:{node.lineno} {node.name}: untyped {untyped}"
            assert node.returns is not None, (
                f"{path.name}:{node.lineno} {node.name}: no return type"
            )


def _private_uses(source: str) -> list[str]:
    """`module._name` uses (and `from cortex_jax… import _name`) of our modules in a script."""
    tree = ast.parse(source)
    ours: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cortex_jax"):
            ours |= {a.asname or a.name for a in node.names}
            found += [a.name for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            ours |= {a.asname or a.name for a in node.names if a.name.startswith("cortex_jax")}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ours
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return sorted(found)


@pytest.mark.parametrize("path", sorted((PKG.parent / "bench").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_call_public_functions_only(path):
    assert not _private_uses(path.read_text()), path.name


def test_the_private_use_checker_bites():
    src = "import cortex_jax as cx\nfrom cortex_jax.method import selection\n"
    found = _private_uses(src + "selection._select_part(1)\ncx._x\n")
    assert sorted(found) == ["cx._x", "selection._select_part"]
    assert _private_uses(src + "selection.select_tokens(1)\ncx.__version__\n") == []
