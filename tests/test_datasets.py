"""Tests for hetero.ir.datasets: the digits split and the MNIST IDX reader/writer."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from hetero.ir import datasets
from hetero.ir.datasets import calibration_digits, load_digits_28, load_mnist_idx, write_mnist_idx


def test_digits_shapes_dtypes_range() -> None:
    for split, n in (("train", 1437), ("test", 360), ("all", 1797)):
        x, y = load_digits_28(split)
        assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert float(x.max()) == pytest.approx(1.0)
        assert set(np.unique(y)) <= set(range(10))


def test_digits_default_split_is_test() -> None:
    np.testing.assert_array_equal(load_digits_28()[1], load_digits_28("test")[1])


def test_digits_split_is_deterministic_disjoint_and_complete() -> None:
    x_all, y_all = load_digits_28("all")
    x_tr, y_tr = load_digits_28("train")
    x_te, y_te = load_digits_28("test")
    x_tr2, _ = load_digits_28("train")
    np.testing.assert_array_equal(x_tr, x_tr2)
    perm = np.random.default_rng(0).permutation(len(y_all))
    np.testing.assert_array_equal(x_tr, x_all[perm[:1437]])
    np.testing.assert_array_equal(y_te, y_all[perm[1437:]])
    train_rows = {row.tobytes() for row in x_tr.reshape(len(x_tr), -1)}
    test_rows = {row.tobytes() for row in x_te.reshape(len(x_te), -1)}
    assert set(perm[:1437].tolist()).isdisjoint(perm[1437:].tolist())
    assert not train_rows & test_rows  # no test image also appears, pixel for pixel, in train
    assert sorted(np.concatenate([y_tr, y_te]).tolist()) == sorted(y_all.tolist())


def test_digits_results_do_not_alias_the_cache() -> None:
    x, y = load_digits_28("all")
    x[:] = 0.5
    y[:] = 0
    x2, y2 = load_digits_28("all")
    assert float(x2.min()) == 0.0 and len(set(y2.tolist())) == 10


def test_digits_upsampling_preserves_corners() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits().images
    x, _ = load_digits_28("all")
    np.testing.assert_allclose(x[:, 0, 0, 0], raw[:, 0, 0] / 16.0, atol=1e-6)
    np.testing.assert_allclose(x[:, 0, -1, -1], raw[:, -1, -1] / 16.0, atol=1e-6)


def test_bad_split_names_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"'val'.*train, test, all"):
        load_digits_28("val")


def test_calibration_digits() -> None:
    cal = calibration_digits()
    assert cal.shape == (100, 1, 28, 28) and cal.dtype == np.float32
    np.testing.assert_array_equal(cal, load_digits_28("train")[0][:100])
    assert calibration_digits(5).shape == (5, 1, 28, 28)
    for bad in (0, -1, 10_000):
        with pytest.raises(ValueError, match="calibration_digits"):
            calibration_digits(bad)


def _tiny(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    pixels, labels = _tiny()
    img_path = tmp_path / f"images-idx3-ubyte{suffix}"
    lab_path = tmp_path / f"labels-idx1-ubyte{suffix}"
    write_mnist_idx(img_path, pixels, lab_path, labels)
    if suffix:
        assert img_path.read_bytes()[:2] == b"\x1f\x8b"
    x, y = load_mnist_idx(img_path, lab_path)
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32
    assert y is not None and y.dtype == np.int64
    np.testing.assert_array_equal(np.rint(x[:, 0] * 255).astype(np.uint8), pixels)
    np.testing.assert_array_equal(y, labels)
    x_only, none = load_mnist_idx(img_path)
    assert none is None
    np.testing.assert_array_equal(x_only, x)


def test_idx_header_layout(tmp_path: Path) -> None:
    pixels, labels = _tiny(2)
    write_mnist_idx(tmp_path / "i", pixels, tmp_path / "l", labels)
    raw = (tmp_path / "i").read_bytes()
    assert struct.unpack(">iIII", raw[:16]) == (2051, 2, 28, 28)
    assert len(raw) == 16 + 2 * 28 * 28
    assert struct.unpack(">iI", (tmp_path / "l").read_bytes()[:8]) == (2049, 2)


def test_idx_float_images_round_trip(tmp_path: Path) -> None:
    x, _ = load_digits_28("test")
    write_mnist_idx(tmp_path / "f.idx", x[:4])
    back, _ = load_mnist_idx(tmp_path / "f.idx")
    np.testing.assert_allclose(back, x[:4], atol=0.5 / 255 + 1e-6)


def test_gz_output_is_reproducible(tmp_path: Path) -> None:
    pixels, _ = _tiny()
    write_mnist_idx(tmp_path / "a.gz", pixels)
    write_mnist_idx(tmp_path / "b.gz", pixels)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def _assert_malformed(path: Path, what: str, labels_of: Path | None = None) -> None:
    with pytest.raises(ValueError, match=what) as info:
        if labels_of is None:
            load_mnist_idx(path)
        else:
            load_mnist_idx(labels_of, path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_bad_magic(tmp_path: Path, suffix: str) -> None:
    pixels, labels = _tiny()
    img, lab = tmp_path / f"i{suffix}", tmp_path / f"l{suffix}"
    write_mnist_idx(img, pixels, lab, labels)
    # A labels file passed as images (and vice versa) is a magic-number mismatch.
    _assert_malformed(lab, "magic")
    _assert_malformed(img, "magic", labels_of=img)
    bogus = tmp_path / f"bogus{suffix}"
    data = struct.pack(">iIII", 1234, 1, 28, 28) + bytes(28 * 28)
    bogus.write_bytes(gzip.compress(data) if suffix else data)
    _assert_malformed(bogus, "magic")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated(tmp_path: Path, suffix: str) -> None:
    pixels, labels = _tiny()
    plain_img, plain_lab = tmp_path / "i", tmp_path / "l"
    write_mnist_idx(plain_img, pixels, plain_lab, labels)
    raw_img = plain_img.read_bytes()
    for cut, what in ((2, "truncated"), (10, "truncated IDX header"), (len(raw_img) - 1, "truncated IDX data")):
        path = tmp_path / f"cut{cut}{suffix}"
        data = raw_img[:cut]
        path.write_bytes(gzip.compress(data) if suffix else data)
        _assert_malformed(path, what)
    short_lab = tmp_path / f"short_lab{suffix}"
    data = plain_lab.read_bytes()[:-1]
    short_lab.write_bytes(gzip.compress(data) if suffix else data)
    _assert_malformed(short_lab, "truncated", labels_of=plain_img)


def test_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    pixels, _ = _tiny()
    good = tmp_path / "good.gz"
    write_mnist_idx(good, pixels)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(good.read_bytes()[:-10])
    _assert_malformed(bad, "gzip")


def test_idx_trailing_bytes_and_count_mismatch(tmp_path: Path) -> None:
    pixels, labels = _tiny()
    img, lab = tmp_path / "i", tmp_path / "l"
    write_mnist_idx(img, pixels, lab, labels)
    extra = tmp_path / "extra"
    extra.write_bytes(img.read_bytes() + b"\0")
    _assert_malformed(extra, "trailing")
    lab2 = tmp_path / "l2"
    write_mnist_idx(tmp_path / "i2", pixels[:2], lab2, labels[:2])
    _assert_malformed(lab2, "2 labels", labels_of=img)


def test_write_rejects_bad_input(tmp_path: Path) -> None:
    pixels, labels = _tiny()
    with pytest.raises(ValueError):
        write_mnist_idx(tmp_path / "x", pixels.astype(np.float32))  # floats outside [0, 1]
    with pytest.raises(ValueError):
        write_mnist_idx(tmp_path / "x", pixels[0])
    with pytest.raises(ValueError):
        write_mnist_idx(tmp_path / "x", pixels, tmp_path / "y", labels[:2])
    with pytest.raises(ValueError):
        write_mnist_idx(tmp_path / "x", pixels, tmp_path / "y")
    assert not (tmp_path / "x").exists()


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_mnist_idx(tmp_path / "nope")


def test_module_constants() -> None:
    assert datasets.IDX_IMAGES_MAGIC == 2051 and datasets.IDX_LABELS_MAGIC == 2049
