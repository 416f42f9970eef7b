from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from anydepth import io


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------------ round trips
def test_png16_round_trip_exact(tmp_path):
    x = np.array([[0, 1, 255, 256], [65535, 32768, 4097, 65534], [2, 3, 511, 1000]], dtype=np.uint16)
    out = io.save_png16(tmp_path / "d.png", x)
    assert out == tmp_path / "d.png"
    with Image.open(out) as im:
        assert im.mode == "I;16" and im.size == (4, 3)
        assert np.array_equal(np.asarray(im), x)  # plain Pillow read-back is exact too
    y = io.read_png16(out)
    assert y.dtype == np.uint16 and np.array_equal(y, x)
    assert _leftovers(tmp_path) == []


def test_png16_all_values_and_layouts(tmp_path):
    full = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert np.array_equal(io.read_png16(io.save_png16(tmp_path / "a.png", full)), full)
    # Big-endian and non-contiguous inputs are written by value, not by raw bytes.
    be = full.astype(">u2")[::2, 1::3]
    assert np.array_equal(io.read_png16(io.save_png16(tmp_path / "b.png", be)), be.astype(np.uint16))


def test_png8_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    with Image.open(io.save_png8(tmp_path / "g.png", g)) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), g)
    with Image.open(io.save_png8(tmp_path / "c.png", rgb[:, ::-1])) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb[:, ::-1])


def test_npy_round_trip(tmp_path):
    d = np.array([[0.0, 1.5, np.inf], [-2.25, 1e-30, 3.4e38]], dtype=np.float32)
    out = io.save_npy(tmp_path / "d.npy", d)
    y = io.read_npy(out)
    assert y.dtype == np.float32 and np.array_equal(y, d)
    y64 = io.read_npy(io.save_npy(tmp_path / "e.npy", d.astype(np.float64)))
    assert y64.dtype == np.float32 and np.array_equal(y64, d)


@pytest.mark.parametrize(
    "fn, x, err",
    [
        (io.save_png16, np.zeros((2, 2), np.int32), TypeError),
        (io.save_png16, np.zeros((2, 2, 1), np.uint16), ValueError),
        (io.save_png16, np.zeros((0, 2), np.uint16), ValueError),
        (io.save_png8, np.zeros((2, 2, 4), np.uint8), ValueError),
        (io.save_png8, np.zeros((2, 2), np.uint16), TypeError),
        (io.save_npy, np.zeros((1, 2, 2), np.float32), ValueError),
        (io.save_npy, np.zeros((2, 2), np.int64), TypeError),
        (io.save_npy, [[0.0]], TypeError),
    ],
)
def test_writers_validate(tmp_path, fn, x, err):
    with pytest.raises(err, match="shape|dtype|numpy"):
        fn(tmp_path / "x", x)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.bin"  # parent created
    assert io.atomic_write(target, lambda f: f.write(b"one")) == target
    io.atomic_write(str(target), lambda f: f.write(b"two"))
    assert target.read_bytes() == b"two"
    assert _leftovers(target.parent) == []
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # usual umask permissions, not 0600


def test_atomic_write_failure_keeps_target(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"original")
    seen = []

    def bad(f):
        f.write(b"partial")
        seen.append(os.path.basename(f.name))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        io.atomic_write(target, bad)
    assert target.read_bytes() == b"original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert seen[0].startswith(".f.bin.") and seen[0].endswith(".tmp")

    # New target + failure: nothing is created.
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_open(tmp_path / "new.bin") as f:
            f.write(b"x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_writer_failure_keeps_existing_png(tmp_path, monkeypatch):
    target = io.save_png16(tmp_path / "d.png", np.full((2, 2), 7, np.uint16))
    before = target.read_bytes()

    def failing_save(self, fp, *a, **k):
        fp.write(b"\x89PNG garbage")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_png16(target, np.zeros((2, 2), np.uint16))
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_atomic_write_to_directory_fails(tmp_path):
    with pytest.raises(IsADirectoryError):
        io.atomic_write(tmp_path, lambda f: f.write(b"x"))


# ------------------------------------------------------------------------------------------------ listing
def _touch_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (2, 2)).save(folder / n, format="PNG")  # content irrelevant to listing


def test_list_images_dir(tmp_path):
    _touch_images(tmp_path, ["b.png", "a.JPG", "c.webp", ".hidden.png"])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".b.png.1234.tmp").write_text("x")
    _touch_images(tmp_path / "sub", ["d.tif"])
    _touch_images(tmp_path / ".cache", ["e.png"])
    assert io.list_images(tmp_path) == [tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "c.webp"]
    assert io.list_images(str(tmp_path), recursive=True) == [
        tmp_path / "a.JPG",
        tmp_path / "b.png",
        tmp_path / "c.webp",
        tmp_path / "sub" / "d.tif",
    ]


def test_list_images_glob_and_file(tmp_path):
    _touch_images(tmp_path, ["f1.png", "f2.png", "g.jpg"])
    _touch_images(tmp_path / "sub", ["f3.png"])
    (tmp_path / "f9.txt").write_text("x")
    assert io.list_images(tmp_path / "f*") == [tmp_path / "f1.png", tmp_path / "f2.png"]
    assert io.list_images(str(tmp_path / "**" / "f*.png"), recursive=True) == [
        tmp_path / "f1.png",
        tmp_path / "f2.png",
        tmp_path / "sub" / "f3.png",
    ]
    assert io.list_images(tmp_path / "g.jpg") == [tmp_path / "g.jpg"]
    assert io.list_images(tmp_path / "f9.txt") == [tmp_path / "f9.txt"]  # explicit file: kept as given


def test_list_images_nothing_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        io.list_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        io.list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"\*\.png"):
        io.list_images(tmp_path / "*.png")
    with pytest.raises(TypeError):
        io.list_images(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ reading images
def test_read_image_errors(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read image .*nope\.png: file does not exist"):
        io.read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"cannot read image .*bad\.jpg"):
        io.read_image(bad)
    good = tmp_path / "t.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"cannot read image .*trunc\.png"):
        io.read_image(trunc)
    with pytest.raises(ValueError, match="directory"):
        io.read_image(tmp_path)


def test_read_image_keeps_mode_and_closes(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGBA", (3, 2), (1, 2, 3, 4)).save(p)
    im = io.read_image(p)
    assert im.mode == "RGBA" and im.size == (3, 2)
    os.remove(p)  # the file is not held open
    assert im.getpixel((0, 0)) == (1, 2, 3, 4)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_read_image_exif_orientation(tmp_path, fmt):
    # 4 wide x 2 high, left half red, right half blue; orientation 6 = "rotate 90 CW to display".
    a = np.zeros((2, 4, 3), np.uint8)
    a[:, :2] = (255, 0, 0)
    a[:, 2:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / f"o.{fmt.lower()}"
    Image.fromarray(a).save(p, format=fmt, exif=exif, **({"quality": 100} if fmt == "JPEG" else {}))
    im = io.read_image(p)
    assert im.size == (2, 4)  # upright: 2 wide, 4 high
    b = np.asarray(im.convert("RGB")).astype(int)
    assert b[0, 0, 0] > 200 and b[0, 0, 2] < 60  # top = former left half (red)
    assert b[-1, 0, 2] > 200 and b[-1, 0, 0] < 60  # bottom = former right half (blue)
    assert im.getexif().get(0x0112) in (None, 1)


def test_read_png16_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        io.read_png16(tmp_path / "x.png")
    p = io.save_png8(tmp_path / "g.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"'L' image, not 16-bit"):
        io.read_png16(p)
    with pytest.raises(ValueError, match="cannot read npy"):
        io.read_npy(p)
