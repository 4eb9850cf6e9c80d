"""The torch-free checkpoint reader on hostile input: never crashes, never reads outside a
storage, refuses with one line naming the tensor."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex_jax.io import torch_pickle
from tests.helpers import torchzip


def _one_line(e: Exception) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    return msg


def test_a_well_formed_file_reads_exactly(tmp_path):
    data = np.arange(24, dtype=np.float32)
    tensors = {
        "w": ("0", np.float32, 2, (3, 4), (4, 1), 24),
        "t": ("0", np.float32, 1, (4, 3), (1, 4), 24),
        "s": ("1", np.int64, 0, (), (), 1),
    }
    path = torchzip.write(tmp_path / "ok.ckpt", tensors, {"0": data, "1": np.array([7])})
    sd = torch_pickle.read_torch_file(path)
    np.testing.assert_array_equal(sd["w"], data[2:14].reshape(3, 4))
    np.testing.assert_array_equal(sd["t"], data[1:13].reshape(3, 4).T)  # a transposed view
    assert sd["s"].shape == () and int(sd["s"]) == 7


@pytest.mark.parametrize(
    "spec, storages, needle",
    [
        (
            ("0", np.float32, 0, (4, 4), (4, 1), 8),
            {"0": np.zeros(8, np.float32)},
            "tensor 'w' (size (4, 4), stride (4, 1), offset 0) reads element 15 of storage '0'",
        ),
        (("0", np.float32, 9, (2,), (1,), 8), {"0": np.zeros(8, np.float32)}, "reads element 10"),
        (("0", np.float32, 0, (3,), (5,), 8), {"0": np.zeros(8, np.float32)}, "reads element 10"),
        (
            ("7", np.float32, 0, (2,), (1,), 2),
            {"0": np.zeros(2, np.float32)},
            "storage '7' is referenced but archive/data/7 is missing",
        ),
        (
            ("0", np.float32, 0, (2, 2), (1,), 4),
            {"0": np.zeros(4, np.float32)},
            "size (2, 2) but stride (1,)",
        ),
        (
            ("0", np.float32, 0, (2**30, 2**30), (1, 1), 4),
            {"0": np.zeros(4, np.float32)},
            "reads element 2147483646",
        ),  # what segfaulted as_strided before
        (("0", np.float32, -1, (2,), (1,), 4), {"0": np.zeros(4, np.float32)}, "has offset -1"),
        (("0", np.float32, 0, (2,), (-1,), 4), {"0": np.zeros(4, np.float32)}, "stride (-1,)"),
        (
            ("0", np.float32, 0, (2,), (1,), 4),
            {"0": np.zeros(5, np.uint8)},
            "not a whole number of float32 items",
        ),
    ],
)
def test_out_of_bounds_and_missing_storages_are_refused(tmp_path, spec, storages, needle):
    path = torchzip.write(tmp_path / "bad.ckpt", {"w": spec}, storages)
    with pytest.raises(ValueError) as e:
        torch_pickle.read_torch_file(path)
    assert needle in _one_line(e.value) and str(path) in str(e.value)


def test_a_file_that_is_not_a_pickle_gets_one_line(tmp_path):
    path = torchzip.write(tmp_path / "junk.ckpt", {}, {}, pickle_bytes=b"this is not a pickle")
    with pytest.raises(ValueError, match="is not a readable torch checkpoint"):
        torch_pickle.read_torch_file(path)
    (tmp_path / "plain.ckpt").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="is not a torch zip checkpoint"):
        torch_pickle.read_torch_file(tmp_path / "plain.ckpt")


_dims = st.lists(st.integers(0, 6), min_size=0, max_size=3)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(0, 40),
    size=_dims,
    stride=st.lists(st.integers(0, 12), min_size=0, max_size=3),
    offset=st.integers(0, 50),
    numel=st.integers(0, 100),
)
def test_fuzz_sizes_strides_offsets(tmp_path, n, size, stride, offset, numel):
    storage = np.arange(n, dtype=np.float32) + 1  # no zeros: data from elsewhere would show
    path = torchzip.write(
        tmp_path / "f.ckpt",
        {"w": ("0", np.float32, offset, tuple(size), tuple(stride), numel)},
        {"0": storage},
    )
    try:
        out = torch_pickle.read_torch_file(path)["w"]
    except ValueError as e:
        _one_line(e)
        return
    assert out.shape == tuple(size)
    if out.size:  # every element is the one the strides name, inside the storage
        idx = offset + np.asarray(
            sum(
                np.arange(d).reshape([-1 if i == j else 1 for j in range(len(size))]) * s
                for i, (d, s) in enumerate(zip(size, stride, strict=True))
            ),
            int,
        )
        assert idx.max() < n
        np.testing.assert_array_equal(out, storage[idx])


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_fuzz_truncated_and_corrupted_archives(tmp_path, cut, flip, byte):
    data = np.arange(30, dtype=np.float32)
    tensors = {
        "a": ("0", np.float32, 0, (5, 6), (6, 1), 30),
        "b": ("0", np.float32, 3, (2,), (2,), 30),
    }
    good = torchzip.write(tmp_path / "g.ckpt", tensors, {"0": data}).read_bytes()
    raw = bytearray(good[: max(1, cut % len(good))] if cut % 3 == 0 else good)
    if cut % 3 != 0:
        raw[flip % len(raw)] = byte
    path = tmp_path / "c.ckpt"
    path.write_bytes(bytes(raw))
    try:  # whatever the damage: a result, or one line; never another exception or a crash
        torch_pickle.read_torch_file(path)
    except ValueError as e:
        _one_line(e)
