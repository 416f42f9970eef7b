"""Reading input images and writing depth files safely.

Readers raise ``ValueError`` naming the file when it is missing or cannot be decoded. Every writer goes through
`atomic_write`: the bytes land in a hidden temporary file next to the target (``.<name>.<random>.tmp``), are
fsync'ed, and are moved into place with ``os.replace``; a failing writer leaves the target untouched and no
temporary file behind, and a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

__all__ = [
    "IMAGE_EXTENSIONS",
    "atomic_open",
    "atomic_write",
    "list_images",
    "read_image",
    "read_npy",
    "read_png16",
    "save_npy",
    "save_png8",
    "save_png16",
]

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
"""Lower-case file suffixes (with the dot) that `list_images` picks up; matching is case-insensitive."""

_GLOB_CHARS = re.compile(r"[*?\[]")
# What Pillow raises for missing, truncated, corrupt or unsupported files.
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _as_path(path: PathLike, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return Path(os.fspath(path)).expanduser()


# --------------------------------------------------------------------------------------------- reading images
def read_image(path: PathLike) -> Image.Image:
    """Load an image file fully into memory, with its EXIF orientation applied.

    The pixel mode is kept as stored (e.g. ``"RGB"``, ``"RGBA"``, ``"L"``, ``"I;16"``); convert as needed.
    Multi-frame files give their first frame.

    Args:
        path: the image file.

    Returns:
        The decoded ``PIL.Image.Image``, rotated/flipped upright as its EXIF ``Orientation`` tag says (the tag is
        then removed). The file is closed on return.

    Raises:
        ValueError: ``"cannot read image <path>: <reason>"`` when the file is missing, a directory, or not a
            decodable image.
    """
    p = _as_path(path)
    if not p.exists():
        raise ValueError(f"cannot read image {p}: file does not exist")
    if p.is_dir():
        raise ValueError(f"cannot read image {p}: is a directory, not a file (use list_images for folders)")
    try:
        with Image.open(p) as im:
            im.load()  # decode now, so truncated/corrupt data fails here and the file can be closed
            out = ImageOps.exif_transpose(im)  # always a new, loaded image (a copy when no rotation is needed)
    except _PIL_ERRORS as e:
        raise ValueError(f"cannot read image {p}: {e}") from e
    return out


def list_images(path_or_dir: PathLike, *, recursive: bool = False) -> list[Path]:
    """Expand a file, a folder or a glob pattern into a sorted list of image files.

    Args:
        path_or_dir: one of
            - an existing file: returned as is (whatever its suffix; `read_image` decides if it is readable);
            - an existing folder: the files in it whose suffix is in `IMAGE_EXTENSIONS` (case-insensitive),
              skipping hidden names (starting with ``.``, also hidden sub-folders); sub-folders only with
              ``recursive=True``;
            - a glob pattern (``*``, ``?``, ``[...]``; ``**`` spans folders when ``recursive=True``): the
              matching image files (suffix in `IMAGE_EXTENSIONS`, hidden names skipped).
        recursive: also look into sub-folders (folder input) / let ``**`` match any depth (glob input).

    Returns:
        Image paths sorted by their path string (for a folder, by their path relative to it).

    Raises:
        ValueError: when nothing is found, naming the input.
    """
    p = _as_path(path_or_dir, "path_or_dir")
    if p.is_file():
        return [p]
    if p.is_dir():
        it = p.rglob("*") if recursive else p.iterdir()
        found = [f for f in it if _is_listed_image(f.relative_to(p)) and f.is_file()]
        found.sort(key=lambda f: f.relative_to(p).as_posix())
        where = f"folder {p}" + (" (recursive)" if recursive else " (sub-folders are searched with --recursive, or recursive=True in Python)")
        if not found:
            raise ValueError(f"no images found in {where}; expected suffixes {', '.join(sorted(IMAGE_EXTENSIONS))}")
        return found
    pattern = str(p)
    if _GLOB_CHARS.search(pattern):
        found = [Path(m) for m in glob.glob(pattern, recursive=recursive)]
        found = sorted((f for f in found if _is_listed_image(Path(f.name)) and f.is_file()), key=lambda f: f.as_posix())
        if not found:
            raise ValueError(
                f"no images match the pattern {pattern!r}; expected suffixes {', '.join(sorted(IMAGE_EXTENSIONS))}"
            )
        return found
    raise ValueError(f"no images found: {p} does not exist")


def _is_listed_image(rel: Path) -> bool:
    """Image suffix and no hidden component (`rel`: the path relative to the listed folder, or just a name)."""
    return rel.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in rel.parts)


# --------------------------------------------------------------------------------------------- atomic writing
@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
    """Context manager yielding a binary file whose content replaces `path` atomically on a clean exit.

    The data goes to ``<dir>/.<name>.<random>.tmp`` (created with the usual umask permissions), is flushed and
    fsync'ed, then ``os.replace``-d onto `path` (and the folder entry fsync'ed where supported). If the block
    raises (anything, KeyboardInterrupt included) the temporary file is removed, `path` is left untouched and the
    exception propagates. Missing parent folders are created.

    Example:
        >>> with atomic_open("out/depth.bin") as f:
        ...     f.write(b"depth")
        5
        >>> Path("out/depth.bin").read_bytes(), sorted(p.name for p in Path("out").iterdir())
        (b'depth', ['depth.bin'])
    """
    target = _as_path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {target}: it is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            f = open(tmp, "xb")  # O_EXCL; permissions 0o666 minus the umask, like any new file
            break
        except FileExistsError:
            continue
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write(path: PathLike, write_fn: Callable[[BinaryIO], object]) -> Path:
    """Write a file atomically: ``write_fn(f)`` writes into a binary temp file that then replaces `path`.

    See `atomic_open` for the guarantees (temp file in the same folder, fsync, ``os.replace``, cleanup and an
    untouched target when `write_fn` raises).

    Args:
        path: the destination file.
        write_fn: called once with the open binary file object; its return value is ignored.

    Returns:
        `path` as a ``Path``.
    """
    target = _as_path(path)
    with atomic_open(target) as f:
        write_fn(f)
    return target


def _fsync_dir(folder: Path) -> None:
    """Persist the rename in the folder entry (POSIX); best effort, a no-op where folders cannot be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------- depth writers
def _check_array(x: object, name: str, dtypes: tuple[type, ...], what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        hint = " (for a torch tensor use .detach().cpu().numpy())" if hasattr(x, "detach") else ""
        raise TypeError(f"{name} must be a numpy array of {what}, got {type(x).__name__}{hint}")
    if x.dtype.type not in dtypes:
        raise TypeError(f"{name} must have dtype {what}, got {x.dtype}; convert it first (e.g. x.astype(...))")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); an image needs height and width >= 1")
    return x


def save_png16(path: PathLike, x: np.ndarray, *, text: dict[str, str] | None = None) -> Path:
    """Save a (H, W) uint16 array as a 16-bit greyscale PNG, losslessly and atomically.

    Args:
        path: destination file (``.png``).
        x: the values, dtype ``uint16``, any byte order / memory layout.
        text: ``{key: value}`` stored as PNG iTXt chunks (e.g. what the image means).

    Returns:
        `path` as a ``Path``. `read_png16` gives back exactly `x`.

    Shape:
        x: (H, W).
    """
    x = _check_array(x, "x", (np.uint16,), "uint16")
    if x.ndim != 2:
        raise ValueError(f"x must be a (H, W) array for a 16-bit PNG, got shape {tuple(x.shape)}")
    # Explicit little-endian buffer + raw mode "I;16": exact for every value, independent of the caller's byte
    # order or strides (Image.fromarray would guess the mode from the array interface).
    h, w = x.shape
    data = np.ascontiguousarray(x, dtype="<u2").tobytes()
    im = Image.frombytes("I;16", (w, h), data, "raw", "I;16")
    return atomic_write(path, lambda f: im.save(f, format="PNG", pnginfo=_png_text(text)))


def save_png8(path: PathLike, x: np.ndarray, *, text: dict[str, str] | None = None) -> Path:
    """Save a uint8 array as an 8-bit PNG (greyscale for (H, W), RGB for (H, W, 3)), atomically.

    Args:
        path: destination file (``.png``).
        x: the values, dtype ``uint8``.
        text: ``{key: value}`` stored as PNG iTXt chunks.

    Returns:
        `path` as a ``Path``.

    Shape:
        x: (H, W) or (H, W, 3).
    """
    x = _check_array(x, "x", (np.uint8,), "uint8")
    if x.ndim == 2:
        mode = "L"
    elif x.ndim == 3 and x.shape[2] == 3:
        mode = "RGB"
    else:
        raise ValueError(f"x must be (H, W) or (H, W, 3) for an 8-bit PNG, got shape {tuple(x.shape)}")
    h, w = x.shape[:2]
    im = Image.frombytes(mode, (w, h), np.ascontiguousarray(x).tobytes())
    return atomic_write(path, lambda f: im.save(f, format="PNG", pnginfo=_png_text(text)))


def _png_text(text: dict[str, str] | None) -> PngImagePlugin.PngInfo | None:
    if not text:
        return None
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)
    return info


def save_npy(path: PathLike, depth: np.ndarray) -> Path:
    """Save a (H, W) depth map as a float32 ``.npy`` file, atomically.

    Args:
        path: destination file (``.npy``; no suffix is added).
        depth: floating-point values; float16/float64 are stored as float32.

    Returns:
        `path` as a ``Path``. `read_npy` gives back the float32 array.

    Shape:
        depth: (H, W).
    """
    depth = _check_array(depth, "depth", (np.float16, np.float32, np.float64), "float32")
    if depth.ndim != 2:
        raise ValueError(f"depth must be a (H, W) array, got shape {tuple(depth.shape)}")
    arr = np.ascontiguousarray(depth, dtype=np.float32)
    return atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))


# --------------------------------------------------------------------------------------------- depth readers
def read_png16(path: PathLike) -> np.ndarray:
    """Read a 16-bit greyscale PNG written by `save_png16` (or any 16-bit greyscale image) as uint16.

    Args:
        path: the file.

    Returns:
        The values, dtype ``uint16``, native byte order.

    Shape:
        (H, W).

    Raises:
        ValueError: naming the file when it is missing, unreadable, or not 16-bit greyscale.
    """
    p = _as_path(path)
    if not p.is_file():
        raise ValueError(f"cannot read 16-bit PNG {p}: " + ("is a directory" if p.is_dir() else "file does not exist"))
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                return np.asarray(im).astype(np.uint16)  # astype: native order, writable copy
            if mode == "I":  # some Pillow versions/plugins decode 16-bit greyscale as 32-bit "I"
                a = np.asarray(im)
                if a.size and (a.min() < 0 or a.max() > 65535):
                    raise ValueError(f"values {a.min()}..{a.max()} do not fit in 16 bits")
                return a.astype(np.uint16)
    except _PIL_ERRORS as e:
        raise ValueError(f"cannot read 16-bit PNG {p}: {e}") from e
    raise ValueError(f"cannot read 16-bit PNG {p}: it is a {mode!r} image, not 16-bit greyscale")


def read_npy(path: PathLike) -> np.ndarray:
    """Read a ``.npy`` array (no pickled objects allowed).

    Args:
        path: the file.

    Returns:
        The stored array, as stored (`save_npy` writes float32 (H, W)).

    Raises:
        ValueError: naming the file when it is missing or not a valid ``.npy`` file.
    """
    p = _as_path(path)
    if not p.is_file():
        raise ValueError(f"cannot read npy file {p}: " + ("is a directory" if p.is_dir() else "file does not exist"))
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"cannot read npy file {p}: {e}") from e
