"""The sample-level report (`io.reports.SampleLevelReport`): what `sample_level.run` returns is
what `save` writes and `read` gives back, arrays included; a file this version cannot read, or a
report made with other settings, is refused in one line; `run` over chunks of concepts gives the
rows and scores of one pass."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.experiments import sample_level
from cortex_jax.experiments.bundle import Models
from cortex_jax.io import reports
from cortex_jax.io.reports import ReportError, SampleLevelReport
from tests.helpers import cli

K, M = 8, 3
CODEBOOK = np.random.default_rng(0).standard_normal((K, 4)).astype(np.float32)
W = np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32)
# the model-free `random` scores (keyed by image id): this file tests the report, not a method
CFG = sample_level.SampleLevelConfig(n=2, k=3, curve_ns=(1, 2), attribution={"method": "random"})


def _grids(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c holds tokens 4c…4c+3 in its top row, anything elsewhere."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2).astype(np.int32)
    tokens = rng.integers(0, K, (n, M, M))
    tokens[:, 0] = 4 * labels[:, None] + rng.integers(0, 4, (n, M))
    return tokens, labels


def _predict(e):  # the top row's embeddings, linearly
    return jnp.einsum("bijd,dc->bc", e[:, :1], W)


def _models() -> Models:
    def decode(grids):  # a token's pixels: its id as a grey level, 2×2 pixels a position
        g = np.asarray(grids, np.float32) / (K - 1) * 2 - 1
        return np.repeat(np.repeat(g, 2, 1), 2, 2)[..., None].repeat(3, -1)

    def classifier(px):  # class 1 where the top rows are bright
        top = px[:, :2].mean((1, 2, 3))
        p1 = 1 / (1 + np.exp(-4 * top))
        return np.stack([1 - p1, p1], 1)

    return Models(
        codebook=CODEBOOK,
        decode=decode,
        class_names=("dark", "bright"),
        grid_size=M,
        predict=_predict,
        predict_name="lin",
        classifier=classifier,
        classifier_name="brightness",
    )


EX, TE = _grids(8, 0), _grids(8, 1)  # one shape: one compile of the scores


@pytest.fixture(scope="module")
def ex_tis():
    return sample_level.scores_for(_models().predict, CODEBOOK, *EX, CFG)


@pytest.fixture(scope="module")
def whole(ex_tis):
    return sample_level.run(
        _models(), [0, 1], EX, TE, CFG, explain_tis=ex_tis, data={"toy": "grids"}
    )


def test_a_report_round_trips_through_its_files(whole, tmp_path):
    sample_level.save(whole, tmp_path, _models(), shown_per_concept=2)
    assert {p.name for p in tmp_path.iterdir()} == set(cli.SAMPLE_FILES)
    back = SampleLevelReport.read(tmp_path, arrays=True)
    assert back == whole and back.arrays is not None
    assert back.arrays.tokens.dtype == np.uint16 and back.arrays.tis.dtype == np.float32
    assert SampleLevelReport.read(tmp_path).arrays is None  # report.json alone
    first = (tmp_path / "report.json").read_bytes()
    back.write(tmp_path / "again")
    assert (tmp_path / "again" / "report.json").read_bytes() == first  # one writer, same bytes
    rows = (tmp_path / "token_sets.csv").read_text().splitlines()
    assert rows[0] == "concept,method,rank,token_id,count" and len(rows) == 1 + 2 * 2 * CFG.k
    row = whole.concepts[1]
    assert rows[1 + 2 * CFG.k] == f"bright,cortex,1,{row.cortex[0]},{row.cortex_counts[0]}"
    fp = json.loads(first)["fingerprint"]
    assert fp["format"] == reports.FORMAT and fp["iem"] == {"iem": "lin"}
    assert fp["method"] == {"method": "random", "seed": 0}
    assert fp["sets"] == {"n": 2, "k": 3, "curve_ns": [1, 2]} and fp["data"] == {"toy": "grids"}


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    assert "\n" not in str(exc.value)
    for needle in needles:
        assert needle in str(exc.value), (needle, str(exc.value))


def test_a_report_this_version_cannot_read_is_refused_in_one_line(whole, tmp_path):
    whole.write(tmp_path)
    good = json.loads((tmp_path / "report.json").read_text())

    def refused(obj, *needles, **read):
        (tmp_path / "report.json").write_text(json.dumps(obj))
        with pytest.raises(ReportError) as e:
            SampleLevelReport.read(tmp_path, **read)
        _one_line(e, *needles)

    refused({k: v for k, v in good.items() if k != "summary"}, "lacks 'summary'")
    refused({**good, "colour": "red"}, "unknown key 'colour'")
    refused({k: v for k, v in good.items() if k != "fingerprint"}, "no fingerprint")
    refused({**good, "fingerprint": {**good["fingerprint"], "format": 2}}, "report format 2")
    row = {k: v for k, v in good["concepts"]["0"].items() if k != "masking_cortex"}
    refused({**good, "concepts": {**good["concepts"], "0": row}}, "concepts.0 lacks")
    curve = {**good["image_level_curve"], "tis": [0.5]}
    refused({**good, "image_level_curve": curve}, "tis has 1 values for 2 n")

    other = sample_level.report_fingerprint(
        CODEBOOK, dataclasses.replace(CFG, k=4), {"iem": "lin"}, {"toy": "grids"}
    )
    refused(good, "made with other settings", "sets.k: 3 there, 4 now", expect=other)
    same = sample_level.report_fingerprint(CODEBOOK, CFG, {"iem": "lin"}, {"toy": "grids"})
    (tmp_path / "report.json").write_text(json.dumps(good))
    assert SampleLevelReport.read(tmp_path, expect=same) == dataclasses.replace(whole, arrays=None)

    (tmp_path / "arrays.npz").unlink()
    with pytest.raises(FileNotFoundError) as e:
        SampleLevelReport.read(tmp_path, arrays=True)
    _one_line(e, "arrays.npz is missing")


def test_runs_over_concept_chunks_give_the_rows_of_one_pass(whole, ex_tis):
    """`run` per chunk of concepts, the explanation split's TIS computed once and passed in, the
    test images keyed by their global ids: each chunk's concept rows and scores are the one
    pass's (the noise is keyed by image id, not by position in the chunk), and the image-level
    curves, weighted by the chunks' test images, average to the one pass's (its random-order
    baseline is keyed by image id too)."""
    (ex_tok, ex_lab), (te_tok, te_lab) = EX, TE
    assert whole.arrays is not None
    curves = {"tis": 0.0, "random": 0.0}
    for c in (0, 1):
        ex, te = ex_lab == c, te_lab == c
        part = sample_level.run(
            _models(),
            [c],
            (ex_tok[ex], ex_lab[ex]),
            (te_tok[te], te_lab[te]),
            CFG,
            explain_tis=ex_tis[ex],
            test_ids=len(ex_lab) + np.flatnonzero(te),
            data={"toy": "grids"},
        )
        assert part.concepts == {c: whole.concepts[c]} and part.fingerprint == whole.fingerprint
        assert part.arrays is not None
        np.testing.assert_array_equal(part.arrays.tis, whole.arrays.tis[te])
        for key in curves:
            curves[key] = curves[key] + np.asarray(getattr(part.image_level_curve, key)) * te.sum()
    for key, total in curves.items():
        np.testing.assert_allclose(
            total / len(te_lab), getattr(whole.image_level_curve, key), rtol=1e-5, err_msg=key
        )
