"""Every explain/ and train/ command on the toy world: files written, errors one line."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cortex_jax.io import folders
from cortex_jax.io.images import to_uint8
from cortex_jax.toy import world
from tests.helpers import cli, tiny

REPO = Path(__file__).resolve().parents[1]


_run, _one_line_error = cli.run, cli.one_line_error


@pytest.fixture
def command():
    """`python -m NAME ARGV…` in this test's process (`cli.in_process`: NAME's `main` after its
    flags are parsed; a user error is then SystemExit("error: …"), see `_refused`). A CLI start
    (imports, toy models, compiles) is most of a small run and a CI minute a few times over, so
    the runs whose process is not what is checked run here; each command keeps a real
    `python -m` in this file (its one-line error, train.iem's Ctrl-C)."""
    return cli.in_process


def _refused(command, argv: tuple[str, ...], *needles: str) -> None:
    """`command(*argv)` ended as a command's user error does in its own process: one `error: …`
    line (SystemExit's message, which Python prints as the last stderr line) with every needle."""
    with pytest.raises(SystemExit) as e:
        command(*argv)
    text = str(e.value)
    assert text.startswith("error: ") and "\n" not in text, text
    for n in needles:
        assert n in text, text


# explain.bias at sizes a test can afford and the verdicts below still resolve (at 150 images, with
# seeds 0 and 1: the known bias's intervals stay above 0.7 and hold 0.8, the overlapping pair's
# hold 0.2; 300 each took twice as long)
BIAS_SIZES = (
    "--per-concept",
    "150",
    "--neutral-images",
    "150",
    "--n-samples",
    "8",
    "--epochs",
    "4",
)


def test_explain_sample_writes_report_and_figures(tmp_path, command):
    command(
        "explain.sample",
        "--concept",
        "red-circle,blue-star",
        *cli.SMALL_SAMPLE,
        "--out",
        str(tmp_path),
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["concept_names"].values()) == {"red-circle", "blue-star"}
    row = report["concepts"]["0"]
    assert len(row["cortex"]) == 10 and len(row["frequency"]) == 10
    prec = report["ground_truth_precision"]
    assert prec["concept_cortex"] > prec["concept_frequency"]  # frequency ids are background
    assert {p.name for p in tmp_path.iterdir() if p.name[0] != "."} == set(cli.SAMPLE_FILES)
    for f in cli.SAMPLE_FILES:
        assert (tmp_path / f).stat().st_size > 0
    assert Image.open(tmp_path / "top_tokens.png").size[0] > 100


def test_explain_sample_errors():
    # the one-line error of a real `python -m`; the other refusals run in-process below
    _one_line_error(_run("explain.sample"), "--concept")


# Every refusal before any work or folder, in-process (a `python -m` each cost ~11 s of CI, mostly
# its start); each command's own process ends in one line elsewhere in this file.
FLAG_ERRORS = {
    "explain.sample": [
        (("--concept", "red-circel"), ("red-circle",)),  # close matches
        (("--concept", "circle"), ("neutral class",)),
        (("--concept", "red-circle", "--n", "100"), ("--n 100", "1..64")),
        (("--concept", "red-circle", "--k", "0"), ("--k 0",)),
    ],
    "explain.codebook": [
        (("--concept", "blue-star", "--lr", "-1"), ("--lr -1.0",)),
        (("--concept", "blue-star", "--steps", "7"), ("steps=7",)),
        (("--concept", "blue-star", "--region", "6:9,0:2"), ("outside the 8x8",)),
        (("--table5", "--region", "0:9,0:2"), ("outside",)),
        (
            (
                "--concept",
                "goldfinch",
                "--vqgan",
                "nobody/vq",
                "--iem-checkpoint",
                "no-such-iem",
            ),
            ("--iem-checkpoint not found: no-such-iem",),
        ),
        (("--concept", "blue-star", "--from-image", "missing.png"), ("missing.png",)),
    ],
    "explain.bias": [
        (("--mix", "1.5"), ("--mix 1.5",)),
        (("--vqgan", "imagenet_f16_16384"), ("--vqgan imagenet_f16_16384",)),
        (("--iem-checkpoint", "no-such-iem"), ("not found: no-such-iem",)),
        (("--iem", "ce", "--pair", "red-circle,circle"), ("no class 'circle'",)),
    ],
}


@pytest.mark.parametrize("name", list(FLAG_ERRORS))
def test_flags_are_checked_before_any_work_or_folder(tmp_path, command, name):
    out = tmp_path / "out"
    for args, needles in FLAG_ERRORS[name]:
        _refused(command, (name, *args, "--out", str(out)), *needles)
        assert not out.exists(), args


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--edit-model", "llamagen"], "--edit-model only apply with --table5"),
        (["--maskgit-iter", "4"], "--maskgit-iter only apply with --table5"),
        (["--table5", "--edit-checkpoint", "x"], "need --edit-model FAMILY"),
        (["--table5", "--edit-model", "llamagen"], "--edit-model llamagen needs --edit-checkpoint"),
        (["--table5", "--maskgit", "m", "--edit-checkpoint", "x"], "give --maskgit DIR or"),
        (["--table5", "--maskgit", "m", "--maskgit-iter", "0"], "--maskgit-iter 0; expected"),
        (
            [
                "--table5",
                "--edit-model",
                "llamagen",
                "--edit-checkpoint",
                "x",
                "--maskgit-iter",
                "3",
            ],
            "--maskgit-iter applies to MaskGIT's editing; --edit-model is llamagen",
        ),
    ],
)
def test_codebook_editing_flags_are_never_silently_ignored(entry_point, argv, message):
    from absl import flags

    codebook = entry_point("explain.codebook")
    flags.FLAGS(["explain.codebook", *argv])
    with pytest.raises(ValueError, match=re.escape(message)):
        codebook._request()


def test_explain_codebook_and_edit(tmp_path, command):
    out = tmp_path / "cb"
    command(
        "explain.codebook",
        "--concept",
        "blue-star",
        "--from-concept",
        "red-star",
        "--steps",
        "20",
        "--log-every",
        "10",
        "--n-images",
        "2",
        "--out",
        str(out),
    )
    info = json.loads((out / "tokens.json").read_text())
    assert info["target"] == "blue-star" and len(info["images"]) == 2
    assert len(info["images"][0]["tokens_final"]) == 16  # centre 4×4
    gif = Image.open(out / "progression.gif")
    assert gif.n_frames == 3  # the original and two logged steps
    assert (out / "progression.png").exists() and (out / "table.md").exists()
    png = tmp_path / "in.png"
    Image.fromarray(to_uint8(world.render(["red-star"], seed=1).pixels)[0]).save(png)
    r = _run(  # explain.edit's own process
        "explain.edit",
        "--image",
        str(png),
        "--tokens",
        str(out / "tokens.json"),
        "--out",
        str(tmp_path / "edited.png"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(tmp_path / "edited.png").size[0] > 64


def test_explain_codebook_errors():
    # a real `python -m`; the other refusals are in FLAG_ERRORS
    _one_line_error(
        _run("explain.codebook", "--concept", "goldfinch"), "ImageNet concept", "--vqgan"
    )


# The toy IEM training at sizes that run in seconds (28 images, batch 4), one for both tests: the
# Ctrl-C test's runs then find the smoke run's compiled steps in XLA's cache (tests/conftest.py)
TINY_IEM = (
    "--config",
    f"{REPO}/configs/iem_ce.py:variant=toy",
    "--config.data.train_per_class=2",
    "--config.data.val_per_class=1",
    "--config.train.batch_size=4",
)


@pytest.mark.slow
def test_train_iem_toy_smoke(tmp_path):
    data = (f"--config.data.train={tmp_path / 'train'}", f"--config.data.val={tmp_path / 'val'}")
    w = ("--workdir", str(tmp_path / "w"))
    _run("train.iem", *TINY_IEM, *data, "--config.train.epochs=1", *w, check=True)
    meta = json.loads((tmp_path / "w/iem/config.json").read_text())
    assert meta["iem"]["arch"] == "ce" and len(meta["class_names"]) == 14
    lines = (tmp_path / "w/metrics.jsonl").read_text().splitlines()
    assert "val_top1" in json.loads(lines[-1])
    assert np.isfinite(json.loads(lines[-1])["loss"])


@pytest.mark.slow
def test_train_iem_ctrl_c_saves_its_step_and_the_rerun_resumes_there(tmp_path):
    import os
    import re
    import signal
    import time

    args = [
        sys.executable,
        "-m",
        "train.iem",
        *TINY_IEM,
        "--workdir",
        str(tmp_path / "w"),
        "--config.train.epochs=500",
        f"--config.data.train={tmp_path / 'train'}",
        f"--config.data.val={tmp_path / 'val'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}

    def start():
        return cli.popen(*args[2:], env=env)  # SIGINT at its default, as from a terminal

    p = start()
    deadline = time.time() + 300
    while not (tmp_path / "w" / "metrics.jsonl").exists():  # training has started
        assert p.poll() is None and time.time() < deadline, p.communicate()[1][-2000:]
        time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    last = err.strip().splitlines()[-1]
    assert p.returncode == 130 and "Traceback" not in err, err[-2000:]
    step = int(
        re.fullmatch(
            r"interrupted; state saved at step (\d+), rerun the same command to resume", last
        )[1]
    )
    # metrics.jsonl appears after the first epoch (28 images, batch 4: 7 steps); how many more
    # steps run before the signal lands depends on the machine's load, so only that is asserted
    assert step >= 7
    p = start()
    line = p.stdout.readline()
    while line and not line.startswith("resumed from step"):
        line = p.stdout.readline()
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=120)
    assert line.strip() == f"resumed from step {step}"


def test_train_iem_refuses_a_stored_dataset_made_with_other_settings(tmp_path, command):
    data = tmp_path / "train"
    command("train.generate", "--classes", "concepts", "--per-class", "1", "--out", str(data))
    before = (data / "meta.json").read_text()
    r = _run(
        "train.iem",
        "--config",
        "configs/iem_ce.py:variant=toy",
        "--workdir",
        str(tmp_path / "w"),
        f"--config.data.train={data}",
        "--config.data.train_per_class=2",
        f"--config.data.val={tmp_path / 'val'}",
    )  # train.iem's one-line error in its own process
    _one_line_error(r, str(data), "per_class: 1 there, 2 now")
    assert (data / "meta.json").read_text() == before
    assert not (tmp_path / "w").exists() and not (tmp_path / "val").exists()


def test_explain_codebook_with_real_format_models(tmp_path, fixtures, command):
    """--vqgan FOLDER + --iem-checkpoint FOLDER of a 1000-class IEM: ImageNet names resolve."""
    import jax

    from cortex_jax.core import imagenet
    from cortex_jax.models import iem

    cfg = iem.IEMConfig("ce", 1000, width=8, depth=1, hidden=16)
    v = iem.init_variables(cfg, jax.random.PRNGKey(0), 16, 32)  # vqgan_jax_tiny: 16×16, d 32
    names = [c.name for c in imagenet.classes()]
    ckpt = folders.write_iem_folder(tmp_path / "iem", cfg, v, names, "vqgan_jax_tiny")
    vq = str(fixtures / "vqgan_jax_tiny")
    png = tmp_path / "bird.png"
    Image.fromarray(to_uint8(world.render(["red-star"], seed=1).pixels)[0]).save(png)
    out = tmp_path / "out"
    command(
        "explain.codebook",
        "--concept",
        "goldfinch",
        "--vqgan",
        vq,
        "--iem-checkpoint",
        str(ckpt),
        "--from-image",
        str(png),
        "--steps",
        "4",
        "--log-every",
        "2",
        "--out",
        str(out),
    )
    info = json.loads((out / "tokens.json").read_text())
    assert info["target"] == "goldfinch" and len(info["images"][0]["tokens_final"]) == 16
    for concept, needles in (
        ("crane", ("ambiguous", "134", "517")),
        ("red-circle", ("toy-world concept",)),
    ):
        models = ("--vqgan", vq, "--iem-checkpoint", str(ckpt))
        x = ("--out", str(tmp_path / "x"))
        _refused(command, ("explain.codebook", "--concept", concept, *models, *x), *needles)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_explain_bias_finds_the_known_bias(tmp_path, command):
    command("explain.bias", "--neutral", "circle", *BIAS_SIZES, "--out", str(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["true_share_a"] == 0.8
    assert 0.7 < report["judge_share_a"]["share_a"] < 0.9  # the generator's realised mixture
    assert [r["n"] for r in report["per_n"]] == [5, 10, 20]
    for r in report["per_n"]:
        v, p = r["verdict"], r["paper"]
        assert v["lean"] == "A" and 0.5 < v["ci"][0] <= v["share_a"] <= v["ci"][1]
        assert v["ci"][0] < 0.8 + 0.1 and v["ci"][1] > 0.8 - 0.1  # near the designed 0.8
        assert p["cliffs_delta"] > 0 and p["ci"][0] > 0  # the paper's δ leans red too
        assert p["cliffs_delta_halved"] == pytest.approx(p["cliffs_delta"] / 2)
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## The paper's statistic")
    for f in ("report.md", "counts_n5.png", "neutral_tokens.png"):
        assert (tmp_path / f).stat().st_size > 0
    # explain.bias's one-line error in its own process
    _one_line_error(_run("explain.bias", "--neutral", "hexagon"), "no contrast pair", "circle")


@pytest.mark.slow
@pytest.mark.parametrize("share", [0.2])
def test_explain_bias_verdict_covers_the_mixture_of_an_overlapping_pair(tmp_path, share, command):
    # red-square and red-cross share colour and preferred background (water): their token sets
    # occur on each other's images, the case the verdict must stay unbiased in. One share here
    # (a CLI run costs a CI minute); tests/test_bias.py checks the interval's coverage and the
    # even mixture's false "lean" rate over hundreds of simulated audits of this kind.
    pair = ("--pair", "red-square,red-cross", "--mix", str(share))
    command("explain.bias", *pair, *BIAS_SIZES, "--out", str(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["true_share_a"] == share
    for r in report["per_n"]:
        assert max(r["leak"].values()) > 0.5  # heavy overlap, as intended
        lo, hi = r["verdict"]["ci"]
        assert lo <= share <= hi, (r["n"], r["verdict"])


@pytest.mark.slow
def test_explain_bias_on_tiny_dallebart(tmp_path, fixtures, command):
    tok = tiny.bart_tokenizer(tmp_path / "tok")
    small = [
        "--dalle",
        str(fixtures / "dallebart_tiny" / "scan"),
        "--tokenizer",
        str(tok),
        "--vqgan",
        str(fixtures / "vqgan_jax_tiny"),
        "--pair",
        "a white doctor|a black doctor",
        "--per-concept",
        "40",
        "--neutral-images",
        "16",
        "--n-samples",
        "2",
        "--epochs",
        "1",
    ]  # 40: 64 training images, the binary IEM's one batch
    command("explain.bias", *small, "--neutral", "a doctor", "--out", str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["concept_a"] == "a white doctor"
    assert [r["n"] for r in report["per_n"]] == [5, 10]
    assert (tmp_path / "out" / "neutral_tokens.png").exists()
    assert "judge_share_a" not in report  # no pixel judge outside the toy world
    command("explain.bias", *small, "--mix", "0.25", "--out", str(tmp_path / "mix"))
    report = json.loads((tmp_path / "mix" / "report.json").read_text())
    assert report["neutral"] == "mix:0.25" and report["true_share_a"] == 0.25
    assert (
        "Designed share of `a white doctor` in `mix:0.25`: 0.25"
        in (tmp_path / "mix" / "report.md").read_text()
    )
    _refused(
        command,
        ("explain.bias", "--dalle", str(fixtures / "dallebart_tiny" / "scan")),
        "--tokenizer",
    )


@pytest.mark.slow
def test_explain_commands_take_a_users_toy_iem(tmp_path, command):
    """A toy IEM the user trained (a train.iem folder: here the shipped RE's, by path) runs in
    explain.sample and explain.codebook on the toy world and gives what the shipped one gives;
    an IEM of other classes is refused in one line."""
    ckpt = str(Path(__file__).resolve().parents[1] / "cortex_jax/toy/weights/iem_re")
    sample = ("--concept", "red-circle", *cli.SMALL_SAMPLE)
    command("explain.sample", *sample, "--iem", "re", "--out", str(tmp_path / "shipped"))
    command("explain.sample", *sample, "--iem-checkpoint", ckpt, "--out", str(tmp_path / "user"))
    shipped = json.loads((tmp_path / "shipped/report.json").read_text())["concepts"]
    assert json.loads((tmp_path / "user/report.json").read_text())["concepts"] == shipped
    import jax

    from cortex_jax.models import iem

    cfg = iem.IEMConfig("ce", 3, width=8, depth=1, hidden=16)
    v = iem.init_variables(cfg, jax.random.PRNGKey(0), 8, 32)
    other = folders.write_iem_folder(tmp_path / "abc", cfg, v, ["a", "b", "c"], "toy")
    _refused(
        command,
        ("explain.sample", *sample, "--iem-checkpoint", str(other), "--out", str(tmp_path / "x")),
        "a toy-world IEM has the 14 concepts",
    )
    command("explain.codebook", "--concept", "blue-star", "--from-concept", "red-star",
            "--n-images", "1", "--steps", "2", "--log-every", "1", "--iem-checkpoint", ckpt,
            "--out", str(tmp_path / "cb"))  # fmt: skip
    assert json.loads((tmp_path / "cb/tokens.json").read_text())["target"] == "blue-star"


@pytest.mark.slow  # 30–70 s: two concepts' images, SmoothGrad, the audit
def test_explain_bias_audits_with_a_users_toy_iem(tmp_path, command):
    """--iem-checkpoint (a train.iem folder: here the shipped RE's, by path) replaces the binary
    IEM the audit would train: its red-circle and blue-circle logits tell the held-out images
    apart, and nothing is trained."""
    ckpt = str(REPO / "cortex_jax/toy/weights/iem_re")
    sizes = ("--per-concept", "20", "--neutral-images", "16", "--n-samples", "2")
    command(
        "explain.bias", "--vqgan", "toy", "--iem-checkpoint", ckpt, *sizes, "--out", str(tmp_path)
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["iem"] == ckpt and report["iem_validation"]["trained"] is False
    assert report["iem_validation"]["val_top1"] >= 0.75  # 8 held-out images of two concepts
    assert not (tmp_path / "work" / "iem").exists()
    assert f"IEM {ckpt} on A vs B" in (tmp_path / "report.md").read_text()


def test_explain_sample_method_flag_reaches_the_study_config(entry_point):
    """--method picks the attribution behind TIS (the seam tests/test_attribution.py checks runs
    it); smoothgrad stays the paper's flat config; --n-samples with another method is refused."""
    from absl import flags

    sample = entry_point("explain.sample")
    flags.FLAGS(["explain.sample", "--all", "--method", "integrated_gradients"])
    cfg = sample._flag_configs()
    assert cfg.method.attribution["method"] == "integrated_gradients"
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["explain.sample", "--all"])
    assert sample._flag_configs().method.attribution is None
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["explain.sample", "--all", "--method", "occlusion", "--n-samples", "4"])
    with pytest.raises(ValueError, match="--n-samples is SmoothGrad's; --method is occlusion"):
        sample._flag_configs()
