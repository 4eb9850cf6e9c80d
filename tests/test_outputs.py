"""No command deletes or overwrites a file it did not write (issue #23): every `--out` /
`--workdir` goes through io.folders' manifest, checked before any work."""

import json
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image

from cortex_jax.io import folders
from cortex_jax.io.images import to_uint8
from cortex_jax.toy import world
from tests.helpers import cli

# Each command with the flags that would otherwise run it on the toy world; {out} is the folder.
COMMANDS = {
    "explain.sample": ("explain.sample", "--concept", "red-circle", "--out", "{out}"),
    "explain.codebook": ("explain.codebook", "--concept", "blue-star", "--out", "{out}"),
    "explain.codebook --table5": ("explain.codebook", "--table5", "--out", "{out}"),
    "explain.bias": ("explain.bias", "--neutral", "circle", "--out", "{out}"),
    "explain.atlas": ("explain.atlas", "--sample", "{sample}", "--out", "{out}"),
    "train.iem": (
        "train.iem",
        "--config",
        "configs/iem_ce.py:variant=toy",
        "--workdir",
        "{out}",
        "--config.data.train={out}/../train",
        "--config.data.val={out}/../val",
    ),
    "train.generate": ("train.generate", "--per-class", "2", "--out", "{out}"),
    "train.toy": ("train.toy", "--workdir", "{out}"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_folder_with_a_foreign_file_is_refused_and_the_file_survives(tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("four years of work")
    sample = tmp_path / "sample"  # explain.atlas needs an explain.sample report to start
    sample.mkdir()
    (sample / "report.json").write_text("{}")
    args = [a.format(out=victim, sample=sample) for a in COMMANDS[name]]
    t0 = time.time()
    r = cli.run(*args)
    cli.one_line_error(r, str(victim), "thesis.txt", "did not write")
    assert (victim / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in victim.iterdir()) == ["thesis.txt"]  # nothing added
    assert not (tmp_path / "train").exists()  # train.iem: no dataset generated first
    assert time.time() - t0 < 60  # refused before any computation (imports only)


def test_atlas_refuses_the_sample_folder_it_reads(tmp_path):
    sample = tmp_path / "sample"
    folders.claim_output(sample, "explain.sample")
    (sample / "report.json").write_text("{}")
    folders.finish_output(sample, "explain.sample")
    r = cli.run("explain.atlas", "--sample", str(sample), "--out", str(sample))
    cli.one_line_error(r, "holds the output of explain.sample")
    assert (sample / "report.json").read_text() == "{}"


def test_the_manifest_rebuilds_only_the_commands_own_files(tmp_path):
    out = tmp_path / "out"
    folders.claim_output(out, "explain.atlas")
    (out / "concepts").mkdir()
    (out / "concepts" / "a.html").write_text("a")
    (out / "index.html").write_text("i")
    folders.finish_output(out, "explain.atlas")
    (out / "concepts" / ".DS_Store").write_text("a file browser's")  # neither ours nor refused
    folders.claim_output(out, "explain.atlas", rebuild=True)  # a rerun starts from nothing
    assert not (out / "index.html").exists() and not (out / "concepts" / "a.html").exists()
    assert (out / "concepts" / ".DS_Store").exists()
    (out / "index.html").write_text("i2")
    folders.finish_output(out, "explain.atlas")
    (out / "notes.md").write_text("mine")  # the user adds a file afterwards
    with pytest.raises(ValueError, match="notes.md, which explain.atlas did not write"):
        folders.claim_output(out, "explain.atlas", rebuild=True)
    assert (out / "notes.md").read_text() == "mine" and (out / "index.html").exists()
    with pytest.raises(ValueError, match="holds the output of explain.atlas"):
        folders.check_output(out, "explain.sample")


def test_an_interrupted_run_keeps_its_files_but_not_older_foreign_ones(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    folders.claim_output(out, "explain.sample")
    (out / "report.json").write_text("{}")  # written, then the run was killed: no finish_output
    folders.check_output(out, "explain.sample")  # a rerun may replace it
    old = out / "old.txt"
    old.write_text("x")
    os.utime(old, (0, 0))  # older than the run: not its file
    with pytest.raises(ValueError, match="old.txt, which explain.sample did not write"):
        folders.check_output(out, "explain.sample")


def test_an_output_file_is_overwritten_only_when_the_command_wrote_it(tmp_path):
    png = tmp_path / "edited.png"
    png.write_bytes(b"a user's picture")
    with pytest.raises(ValueError, match="explain.edit did not write it"):
        folders.check_output_file(png, "explain.edit")
    png.unlink()
    png.write_bytes(b"ours")
    folders.finish_output_file(png, "explain.edit")
    folders.check_output_file(png, "explain.edit")
    png.write_bytes(b"replaced by the user since")
    with pytest.raises(ValueError, match="did not write it"):
        folders.check_output_file(png, "explain.edit")


def test_explain_edit_rewrites_its_own_png_and_refuses_a_foreign_one(tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(to_uint8(world.render(["red-star"], seed=1).pixels)[0]).save(image)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps({"region_positions": [27, 28], "images": [{"tokens_final": [5, 9]}]})
    )
    out = tmp_path / "edited.png"
    args = ("explain.edit", "--image", str(image), "--tokens", str(tokens), "--out", str(out))
    cli.run(*args, check=True)
    first = out.read_bytes()
    cli.run(*args, check=True)  # its own file: rewritten
    assert out.read_bytes() == first
    mine = tmp_path / "mine.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(mine)
    before = mine.read_bytes()
    r = cli.run(*args[:-1], str(mine))
    cli.one_line_error(r, str(mine), "did not write it")
    assert mine.read_bytes() == before


@pytest.mark.slow
def test_explain_codebook_rewrites_a_folder_it_wrote(tmp_path):
    out = tmp_path / "cb"
    args = (
        "explain.codebook",
        "--concept",
        "blue-star",
        "--from-concept",
        "red-star",
        "--steps",
        "2",
        "--log-every",
        "1",
        "--n-images",
        "1",
        "--out",
        str(out),
    )
    cli.run(*args, check=True)
    cli.run(*args, check=True)
    owner = json.loads((out / folders.OWNER_NAME).read_text())
    assert owner["command"] == "explain.codebook" and "tokens.json" in owner["files"]


@pytest.mark.slow
def test_explain_sample_rewrites_a_folder_it_wrote(tmp_path):
    args = ("explain.sample", "--concept", "red-circle", *cli.SMALL_SAMPLE, "--out", str(tmp_path))
    cli.run(*args, check=True)
    cli.run(*args, check=True)
    assert "report.json" in json.loads((tmp_path / folders.OWNER_NAME).read_text())["files"]


def test_ctrl_c_ends_in_one_line_and_the_folder_stays_the_commands(tmp_path):
    out = tmp_path / "cb"
    args = ("--concept", "blue-star", "--steps", "100000", "--log-every", "1000", "--out", str(out))
    p = cli.popen("explain.codebook", *args)
    deadline = time.time() + 180
    while not (out / folders.OWNER_NAME).exists():  # claimed: the optimisation starts now
        assert p.poll() is None and time.time() < deadline, p.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted; ") and "Traceback" not in err
    folders.check_output(out, "explain.codebook")  # a rerun may write there


def test_the_start_up_interrupt_handler_ends_the_process_and_raises_nothing():
    """The entry points' SIGINT handler, before a command's work: it ends the process itself (one
    line, status 130) and raises nothing into the interrupted code, which may be a native
    library's start-up (the timed tests below can only catch that when the signal hits it)."""
    import subprocess
    import sys

    child = (
        "import signal, sys\n"
        "sys.argv[0] = '-m'\n"  # as `python -m explain.…` while the package is located
        "import explain\n"
        "try:\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "except BaseException as e:\n"
        "    print('raised', type(e).__name__)\n"
        "print('ran on')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", child],
        cwd=cli.REPO,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert (r.returncode, r.stdout) == (130, ""), (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip() == "interrupted while starting; nothing was written"


@pytest.mark.parametrize("moment", ["jaxlib", "0.5s"])
@pytest.mark.parametrize("command", ["explain.sample", "train.generate"])
def test_ctrl_c_while_starting_is_one_line_too(tmp_path, command, moment):
    if moment == "jaxlib" and not os.path.exists("/proc/self/maps"):
        pytest.skip("finds the moment in Linux's /proc/PID/maps")
    out = tmp_path / "out"
    p = cli.popen(command, "--out", str(out))
    # Python is up; JAX and the command's modules are still importing. The moment jaxlib's
    # shared object maps is the window where a KeyboardInterrupt raised into its native start-up
    # aborted the interpreter (SIGABRT/SIGSEGV, seen in CI); 0.5 s in is later in the imports.
    if moment == "jaxlib":
        cli.wait_until_loading(p, "jaxlib")
    else:
        time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err
    assert not out.exists()
