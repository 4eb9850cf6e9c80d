"""Masking draws black exactly over the chosen patches; scores against hand-computed values."""

import numpy as np
import pytest

from cortex_jax.method import evaluate


def test_black_out_exact_patches():
    px = np.random.default_rng(0).uniform(-0.9, 1, (2, 8, 8, 3)).astype(np.float32)
    mask = np.zeros((2, 4, 4), bool)
    mask[0, 1, 2] = True  # pixels rows 2-3, cols 4-5 of image 0
    mask[1, 3, 0] = True
    out = evaluate.black_out(px, mask)
    black = np.zeros((2, 8, 8), bool)
    black[0, 2:4, 4:6] = True
    black[1, 6:8, 0:2] = True
    assert (out[black] == -1).all()
    np.testing.assert_array_equal(out[~black], px[~black])
    with pytest.raises(ValueError, match="does not tile"):
        evaluate.black_out(px, np.zeros((2, 3, 3), bool))


def test_masks_by_position_and_by_token_id():
    pos = np.array([[0, 5], [15, 1]])
    m = evaluate.positions_mask(pos, 4)
    assert m.sum() == 4 and m[0, 0, 0] and m[0, 1, 1] and m[1, 3, 3] and m[1, 0, 1]
    ids = np.array([[[1, 2], [2, 3]], [[4, 2], [1, 1]]])
    np.testing.assert_array_equal(evaluate.token_id_mask(ids, np.array([2]))[0], [[0, 1], [1, 0]])
    per_image = evaluate.token_id_mask(ids, np.array([[3], [1]]))
    np.testing.assert_array_equal(per_image[1], [[0, 0], [1, 1]])
    r = evaluate.random_positions(3, 4, 5)
    assert r.shape == (3, 5) and all(len(set(row)) == 5 for row in r)
    np.testing.assert_array_equal(r, evaluate.random_positions(3, 4, 5))  # seed 42 default
    assert len({tuple(row) for row in r}) == 3  # images get their own draws
    # Keyed by global image id: a chunk of a test set gets exactly its images' draws.
    whole = evaluate.random_positions(10, 4, 5, image_ids=np.arange(100, 110))
    chunk = evaluate.random_positions(4, 4, 5, image_ids=np.arange(106, 110))
    np.testing.assert_array_equal(chunk, whole[6:])
    assert not np.array_equal(chunk, whole[:4])  # a second chunk does not repeat the first
    with pytest.raises(ValueError, match=r"image_ids has shape \(2,\); expected \(3,\)"):
        evaluate.random_positions(3, 4, 5, image_ids=[1, 2])


def test_masking_effect_with_a_known_classifier():
    # The classifier says class 1 with p = share of black pixels, class 0 otherwise.
    def classifier(px):
        black = (px == -1).all(-1).mean(axis=(1, 2))
        return np.stack([1 - black, black], -1)

    px = np.zeros((2, 4, 4, 3), np.float32)
    mask = np.zeros((2, 2, 2), bool)
    mask[:, 0, 0] = True
    mask[1, 1, 1] = True
    eff = evaluate.masking_effect(classifier, px, np.array([0, 0]), mask)
    assert eff["probability_before"] == 1.0
    assert eff["probability_after"] == pytest.approx((0.75 + 0.5) / 2)
    assert eff["accuracy_after"] == 1.0 and eff["tokens_masked"] == 1.5


def test_ground_truth_precisions():
    truth = np.zeros((1, 2, 2), bool)
    truth[0, 0, :] = True
    assert evaluate.position_precision(np.array([[0, 1, 2]]), truth) == pytest.approx(2 / 3)
    ids = np.array([[[7, 8], [7, 9]]])
    assert evaluate.occurrence_precision(ids, truth, np.array([7])) == 0.5
    assert np.isnan(evaluate.occurrence_precision(ids, truth, np.array([3])))
