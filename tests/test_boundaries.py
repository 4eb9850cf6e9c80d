"""Bad input at the boundary, through the paths a user takes (the CLIs and the public API): one
line naming the value and what was expected, exit status 1, nothing written or lost."""

import functools
import json
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cortex_jax.core import errors
from cortex_jax.experiments import training
from cortex_jax.io import shards
from cortex_jax.io.images import read_image
from cortex_jax.toy import load_toy_vqgm
from tests.helpers import cli, tiny

REPO = Path(__file__).resolve().parents[1]


_run = cli.run
_one_line_error = functools.partial(cli.one_line_error, status=1)  # our boundary exits 1


# ---------------------------------------------------------------------------------------------
# Token datasets are validated when opened
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path):
    tiny.make_dataset(tmp_path / "d", 80, 0)
    return tmp_path / "d"


def _rewrite(folder: Path, kind: str, array) -> Path:
    path = shards.shard_path(folder, 1, kind)
    np.save(path, array)
    return path


@pytest.mark.parametrize(
    "kind, make, needle",
    [
        ("tokens", lambda t: np.where(t == t.max(), 40, t).astype(np.uint16), "token id 40"),
        ("tokens", lambda t: t.astype(np.int64), "holds int64 (40, 4, 4); expected uint16"),
        ("tokens", lambda t: t.astype(np.float32), "holds float32"),
        ("labels", lambda lab: lab.astype(np.float32), "expected int32 (n,) labels"),
        ("labels", lambda lab: np.where(lab == 0, 7, lab).astype(np.int32), "labels 1..7"),
        ("labels", lambda lab: np.where(lab == 0, -1, lab).astype(np.int32), "labels -1.."),
        ("labels", lambda lab: lab[:-3], "has 37 labels for the 40 token grids"),
    ],
)
def test_a_damaged_shard_is_named_when_the_dataset_opens(dataset, kind, make, needle):
    original = np.load(shards.shard_path(dataset, 1, kind))
    path = _rewrite(dataset, kind, make(original))
    with pytest.raises(ValueError) as e:
        shards.TokenDataset.open(dataset)
    assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_truncated_and_flipped_files_are_named(dataset):
    path = shards.shard_path(dataset, 0, "tokens")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # what "mmap length is greater than file size" was
    with pytest.raises(ValueError, match=f"{path} is damaged or not a .npy array"):
        shards.TokenDataset.open(dataset)
    path.write_bytes(b"\x93NUMPX" + raw[6:])  # a flipped magic byte
    with pytest.raises(ValueError, match="is damaged or not a .npy array"):
        shards.TokenDataset.open(dataset)
    (dataset / "meta.json").write_text('{"class_names": ["a", "b"], "vqgm": ')
    with pytest.raises(ValueError, match=r"meta.json is not valid JSON .*damaged"):
        shards.TokenDataset.open(dataset)


def test_labels_beyond_the_iem_classes_refuse_to_train(tmp_path):
    train = tiny.make_dataset(tmp_path / "t", 80, 0)
    cfg = tiny.model_config()  # 4 classes: the data's
    small = type(cfg)(**{**cfg.to_dict(), "n_classes": 3})
    args = (tiny.train_config(), train, train, tiny.codebook(), tmp_path / "run")
    with pytest.raises(ValueError, match="labels up to 3 .* IEM has n_classes=3"):
        training.train_and_evaluate(small, *args)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything was saved
    with pytest.raises(ValueError, match="ids of a 32-entry codebook; the VQGAN has 16"):
        training.train_and_evaluate(
            cfg, tiny.train_config(), train, train, tiny.codebook()[:16], tmp_path / "run2"
        )


# ---------------------------------------------------------------------------------------------
# Training: non-finite loss, resume of another run, the summary after a resume
# ---------------------------------------------------------------------------------------------


def test_a_non_finite_loss_stops_training_naming_the_step(tmp_path):
    train = tiny.make_dataset(tmp_path / "t", 80, 0)
    cb = tiny.codebook()
    cb[train.tokens[0][0, 0, 0]] = np.inf  # a token of the very first batch
    with pytest.raises(ValueError, match=r"training loss became nan at step 1; stopped before"):
        training.train_and_evaluate(
            tiny.model_config(), tiny.train_config(), train, train, cb, tmp_path / "run"
        )
    assert not list((tmp_path / "run" / "checkpoints" / "latest").glob("*"))  # nothing saved


def test_resume_of_another_run_is_refused_and_fresh_starts_over(tmp_path):
    train = tiny.make_dataset(tmp_path / "t", 80, 0)
    args = (tiny.model_config(), tiny.train_config(), train, train, tiny.codebook())
    training.train_and_evaluate(*args, tmp_path / "run", stop_after=4)
    other = (args[0], tiny.train_config(learning_rate=1e-2), *args[2:])
    with pytest.raises(ValueError, match=r"holds another run \(differs in train.learning_rate\)"):
        training.train_and_evaluate(*other, tmp_path / "run")
    wider = (type(args[0])(**{**args[0].to_dict(), "width": 48}), *args[1:])
    with pytest.raises(ValueError, match=r"differs in model.width\); pass --fresh"):
        training.train_and_evaluate(*wider, tmp_path / "run")
    state, best = training.train_and_evaluate(*other, tmp_path / "run", fresh=True)
    assert int(state.step) == 10 and best["step"] in (5, 10)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] > 4 or rows[0]["step"] == min(r["step"] for r in rows)  # no old rows


def test_the_best_reported_after_a_resume_is_the_whole_runs(tmp_path):
    train = tiny.make_dataset(tmp_path / "t", 80, 0)
    args = (tiny.model_config(), tiny.train_config(epochs=3), train, train, tiny.codebook())
    training.train_and_evaluate(*args, tmp_path / "run", stop_after=8)  # evaluated at 5
    _, best = training.train_and_evaluate(*args, tmp_path / "run")
    assert best == training.best_validation(tmp_path / "run") and best["step"] in (5, 10, 15)
    _, again = training.train_and_evaluate(*args, tmp_path / "run")  # a finished run
    assert again == best


# ---------------------------------------------------------------------------------------------
# Pixels and images
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vq():
    return load_toy_vqgm().vqgan


def test_pixels_are_checked_at_the_boundary(vq):
    px = np.zeros((1, 32, 32, 3), np.float32)
    bad = px.copy()
    bad[0, 3, 4, 1] = np.nan
    with pytest.raises(ValueError, match=r"pixel \(0, 3, 4, 1\) is nan"):
        vq.encode(bad)
    with pytest.raises(ValueError, match=r"pixels span 0..255; expected \[-1, 1\] \(0..255"):
        vq.encode(np.full((1, 32, 32, 3), 255.0) * np.linspace(0, 1, 3))
    with pytest.raises(ValueError, match="dtype uint8; expected floats"):
        vq.encode(px.astype(np.uint8))
    vq.encode(px + 1.02)  # a decoded image's small overshoot is fine


def test_ids_outside_the_codebook_are_refused_before_a_jitted_decode(vq):
    ids = np.zeros((6, 8, 8), np.int32)
    ids[5, 2, 3] = 512  # in the second batch of 4: checked before any batch is decoded
    with pytest.raises(ValueError, match=r"token id 512 at index \(5, 2, 3\) is outside"):
        vq.decode_pixels(ids, batch=4)
    px = vq.decode_pixels(ids[:5], batch=4)
    assert px.shape == (5, 32, 32, 3) and px.min() >= -1 and px.max() <= 1


def _png(path, array, mode=None):
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_read_image_handles_16_bit_grey_and_alpha(tmp_path):
    grey16 = np.full((32, 32), 32768, np.uint16)  # mid grey, which a plain convert makes white
    px = read_image(_png(tmp_path / "g16.png", grey16), 32)
    assert px.shape == (1, 32, 32, 3) and abs(float(px.mean())) < 0.01
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :16, 3] = 255  # left half opaque red, right half transparent
    px = read_image(_png(tmp_path / "a.png", rgba), 32)
    np.testing.assert_allclose(px[0, 8, 4], [1, -1, -1], atol=0.02)  # red stays red
    np.testing.assert_allclose(px[0, 8, 28], [1, 1, 1], atol=0.02)  # transparent → white
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(  # plain 8-bit RGB reads exactly as before
        read_image(_png(tmp_path / "rgb.png", rgb), 32)[0], rgb.astype(np.float32) / 127.5 - 1
    )


def test_read_image_refuses_broken_files_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="x.png is not a readable image"):
        read_image(tmp_path / "x.png", 32)
    good = _png(tmp_path / "ok.png", np.zeros((64, 64, 3), np.uint8)).read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="cut.png is not a readable image"):
        read_image(tmp_path / "cut.png", 32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="decompression bomb"):
        read_image(tmp_path / "ok.png", 32)
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_image(tmp_path / "missing.png", 32)


# ---------------------------------------------------------------------------------------------
# Hygiene of the writers
# ---------------------------------------------------------------------------------------------


def test_atomic_writes_respect_the_umask(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    shards.atomic_write_bytes(tmp_path / "f.json", b"{}")
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~mask
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; os.umask(0o002); from cortex_jax.io import shards; "
            "from pathlib import Path; p = Path(os.environ['P']); "
            "shards.atomic_write_bytes(p, b'x'); print(oct(p.stat().st_mode & 0o777))",
        ],
        env={**os.environ, "P": str(tmp_path / "g.bin"), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "0o664", out.stderr  # group-shared datasets stay readable


def test_stale_temp_files_are_cleaned_and_live_ones_kept(tmp_path):
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        "dead": f".shard-00000.tokens.npy~{host}~{dead.pid}~abc.tmp",
        "live": f".shard-00001.tokens.npy~{host}~{os.getpid()}~def.tmp",
        "other_new": ".meta.json~elsewhere~12~ghi.tmp",
        "other_old": ".meta.json~elsewhere~13~jkl.tmp",
    }
    for n in names.values():
        (tmp_path / n).write_bytes(b"partial")
    old = time.time() - 2 * shards.STALE_AFTER_S
    os.utime(tmp_path / names["other_old"], (old, old))
    shards.write_meta(tmp_path, {"class_names": ["a"], "vqgm": "x"})  # a writer starts here
    left = {p.name for p in tmp_path.glob(".*.tmp")}
    assert left == {names["live"], names["other_new"]}


def test_dataset_creation_is_exclusive(tmp_path):
    shards.write_meta(tmp_path / "d", {"class_names": ["a"], "vqgm": "x", "seed": 0})
    shards.write_meta(tmp_path / "d", {"class_names": ["a"], "vqgm": "x", "seed": 0})  # same: ok
    with pytest.raises(ValueError, match="already holds a different dataset.*seed: 0 there, 1 now"):
        shards.write_meta(tmp_path / "d", {"class_names": ["a"], "vqgm": "x", "seed": 1})
    with pytest.raises(FileExistsError):
        shards.atomic_write_bytes(tmp_path / "d" / "meta.json", b"{}", exclusive=True)
    assert json.loads((tmp_path / "d" / "meta.json").read_text())["seed"] == 0
    assert not list((tmp_path / "d").glob(".*.tmp"))


def test_one_line_errors_and_writable_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="--out .*file is a file; expected a folder"):
        errors.writable_folder(tmp_path / "file")
    with pytest.raises(ValueError, match="is not writable"):
        errors.writable_folder(tmp_path / "file" / "sub")
    with pytest.raises(SystemExit) as e, errors.one_line_errors():
        open(tmp_path / "nope.txt")
    assert str(e.value) == f"error: No such file or directory: {tmp_path / 'nope.txt'}"
    with pytest.raises(KeyError), errors.one_line_errors():  # a bug keeps its traceback
        {}["x"]


def test_a_ctrl_c_a_library_swallowed_or_changed_still_ends_the_command(monkeypatch, capsys):
    def interrupted_while_tracing():  # what JAX did to a Ctrl-C mid-trace, under load
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise NotImplementedError("Convolutions with non-static strides") from None

    with pytest.raises(SystemExit) as e, errors.one_line_errors():
        try:
            interrupted_while_tracing()  # `from None` hides the cause, not the context
        except NotImplementedError as bug:
            assert bug.__suppress_context__
            raise
    assert e.value.code == errors.INTERRUPTED_STATUS
    assert capsys.readouterr().err.strip().startswith("interrupted; the files written so far")
    with pytest.raises(NotImplementedError), errors.one_line_errors():  # no Ctrl-C: a bug
        raise NotImplementedError("a bug")

    # a Ctrl-C the entry point's handler saw (explain/__init__.py) but a library swallowed
    monkeypatch.setitem(sys.modules, "explain", types.SimpleNamespace(interrupted=True))
    ran = []
    with pytest.raises(SystemExit) as e, errors.one_line_errors():
        ran.append(1)  # the command's work: it must not start
    assert e.value.code == errors.INTERRUPTED_STATUS and not ran
    assert capsys.readouterr().err.strip() == "interrupted while starting; nothing was written"


# ---------------------------------------------------------------------------------------------
# The CLIs, as a user runs them
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_mistakes_end_in_one_line_and_write_nothing(tmp_path):
    r = _run("train.generate", "--classes", "", "--out", str(tmp_path / "empty"))
    _one_line_error(r, "--classes '' names no class")
    assert not (tmp_path / "empty").exists()
    (tmp_path / "afile").write_text("x")
    _one_line_error(
        _run("explain.sample", "--concept", "red-circle", "--out", str(tmp_path / "afile")),
        "is a file; expected a folder",
    )
    _one_line_error(
        _run("explain.sample", "--concept", " ", "--out", str(tmp_path / "s")), "names no concept"
    )
    _one_line_error(
        _run(
            "explain.codebook", "--concept", "blue-star", "--out", str(tmp_path / "afile" / "sub")
        ),
        "is not writable",
    )
    assert not (tmp_path / "afile").is_dir()
    png = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(png)
    tokens = tmp_path / "tokens.json"
    edit = ("explain.edit", "--image", str(png), "--tokens", str(tokens))
    for text, needle in (
        ('{"images": [', "is not JSON"),
        ('{"images": [{"tokens_final": [1]}]}', "lacks 'region_positions'"),
    ):
        tokens.write_text(text)
        _one_line_error(_run(*edit, "--out", str(tmp_path / "e.png")), needle)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _one_line_error(
        _run(
            "explain.codebook",
            "--concept",
            "blue-star",
            "--from-image",
            str(tmp_path / "bad.png"),
            "--out",
            str(tmp_path / "c"),
        ),
        "bad.png is not a readable image",
    )
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    assert not (tmp_path / "e.png").exists()


@pytest.mark.slow
def test_readme_training_flow_and_the_class_mismatch(tmp_path):
    # The README's commands in order, smaller: generate the concepts, then train the toy IEM on
    # them; a dataset of all 17 classes is refused in one line instead of training on NaN.
    cfg = str(REPO / "configs" / "iem_ce.py") + ":variant=toy"
    small = [
        "--config.train.epochs=1",
        "--config.train.batch_size=16",
        "--config.data.train_per_class=4",  # what train.generate made below (else refused)
        "--config.data.val_per_class=2",
    ]
    r = _run(
        "train.generate",
        "--classes",
        "concepts",
        "--per-class",
        "4",
        "--out",
        "runs/toy_tokens/train",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    # (the README's next line, train.generate --source encoded, feeds nothing below; its command
    # runs in test_toy_models.test_generate_cli_encoded_and_errors)
    r = _run("train.iem", "--config", cfg, *small, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    first = r.stdout.strip().splitlines()[0]
    assert first.startswith("best validation (step ")
    again = _run("train.iem", "--config", cfg, *small, cwd=tmp_path)  # a finished run
    lines = again.stdout.strip().splitlines()
    assert again.returncode == 0 and lines[0].startswith("resumed from step ") and lines[1] == first
    _one_line_error(
        _run(
            "train.iem", "--config", cfg, *small, "--config.train.learning_rate=0.1", cwd=tmp_path
        ),
        "holds another run (differs in train.learning_rate)",
        "--fresh",
    )
    r = _run(
        "train.iem",
        "--config",
        cfg,
        *small,
        "--config.train.learning_rate=0.1",
        "--fresh",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(
        "train.generate",
        "--classes",
        "all",
        "--per-class",
        "2",
        "--out",
        "runs/all17",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    _one_line_error(
        _run(
            "train.iem",
            "--config",
            cfg,
            *small,
            "--config.data.train=runs/all17",
            "--config.data.generate_if_missing=False",  # a dataset of the user's, used as is
            "--workdir",
            "runs/iem_all",
            cwd=tmp_path,
        ),
        "labels up to 16",
        "n_classes=14",
    )
    _one_line_error(  # the toy variant's own datasets: one of other classes is not reused
        _run("train.iem", "--config", cfg, *small, "--config.data.train=runs/all17", cwd=tmp_path),
        "runs/all17 already holds a different dataset",
        "per_class: 2 there, 4 now",
    )
    assert not (tmp_path / "runs" / "iem_all" / "checkpoints").exists()


@pytest.mark.slow
def test_from_index_with_a_label_the_iem_lacks(tmp_path):
    names = [f"class{i}" for i in range(17)]
    shards.write_meta(
        tmp_path / "d", {"class_names": names, "vqgm": "toy", "grid_size": 8, "codebook_size": 512}
    )
    shards.write_shard(tmp_path / "d", 0, np.zeros((2, 8, 8), np.uint16), np.array([3, 15]))
    _one_line_error(
        _run(
            "explain.codebook",
            "--concept",
            "blue-star",
            "--from-index",
            "1",
            "--dataset",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "o"),
        ),
        "--from-index 1 has label 15",
        "14 classes",
    )
