r"""Depth files: raw depth with what it means, and control images (pictures of depth), never confused.

Every output format has one meaning, and its name says which:

**Raw depth** (:data:`RAW_FORMATS`, written by :func:`save_depth`, read back by :func:`load_depth`):

================  ===================================================================================
``npy``           float32 ``.npy`` (lossless); the metadata goes to a sidecar ``<name>.json`` next to it.
``npz``           compressed ``.npz`` with arrays ``depth`` (float32), ``metadata`` (JSON text) and, when
                  given, ``intrinsics`` / ``extrinsics`` (float64): one self-contained lossless file.
``exr``           OpenEXR, one 32-bit float channel ``Z``, ZIP-compressed: lossless, NaN kept. Metadata in an
                  ``anydepth`` string attribute of the header. Needs the optional ``OpenEXR`` package
                  (``pip install "anydepth[exr]"``).
``depth_png16``   16-bit greyscale PNG of the raw values. The finite values are quantised linearly between
                  ``low`` and ``high`` (default: the map's min and max) to ``1 .. 65535``; ``0`` marks missing
                  (NaN/inf) pixels. The range and the metadata go into an ``anydepth`` text chunk, so
                  :func:`load_depth` restores the values within half a step, :math:`(high - low) / 65534 / 2`.
================  ===================================================================================

**Control images** (:data:`CONTROL_FORMATS`, written by :func:`save_control_image`): the normalised picture a
depth ControlNet takes (near = bright unless inverted), ``control_png16`` (16-bit grey) or ``control_png8``
(8-bit grey, or RGB for a colormap). They record ``{"content": "control_image", ...}`` in the PNG, and
:func:`load_depth` refuses them (:class:`ControlImageError`): a picture's levels are not depth values.

Raw metadata always holds ``kind`` (``"disparity"``, ``"metric_depth"``, ``"depth"``, see :mod:`anydepth.kinds`) and
``units`` when the kind is known, the camera when given (``intrinsics`` :math:`3 \times 3` in pixels, ``extrinsics``
world-to-camera :math:`3 \times 4` or :math:`4 \times 4`), and any JSON-serialisable extras (e.g. the model name). Every
file is written atomically (:mod:`anydepth.io`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .io import PathLike, atomic_open, atomic_write, save_png8, save_png16
from .kinds import UNITS, check_kind

__all__ = ["CONTROL_FORMATS", "OUTPUT_FORMATS", "RAW_FORMATS", "SUFFIX", "ControlImageError", "DepthFile",
           "export_format", "is_raw_format", "load_depth", "save_control_image", "save_depth"]

RAW_FORMATS: tuple[str, ...] = ("npy", "npz", "exr", "depth_png16")
"""Raw depth: the values as the model gives them, with kind and units. :func:`save_depth` writes them."""

CONTROL_FORMATS: tuple[str, ...] = ("control_png16", "control_png8")
"""Control images: normalised pictures of depth for ControlNets and viewers. :func:`save_control_image` writes them."""

OUTPUT_FORMATS: tuple[str, ...] = CONTROL_FORMATS + RAW_FORMATS
"""Every file format anydepth writes for a depth map."""

SUFFIX: dict[str, str] = {"npy": ".npy", "npz": ".npz", "exr": ".exr", "depth_png16": ".png",
                          "control_png16": ".png", "control_png8": ".png"}
"""File suffix of each format."""

_SUFFIXES = {".png": "depth_png16", ".exr": "exr", ".npy": "npy", ".npz": "npz"}
_META_KEY = "anydepth"
_PNG_STEPS = 65534  # 1..65535 carry values, 0 marks missing pixels
_CONTROL = "control_image"
# "png16" / "png8" meant a control image in some places and raw depth in others; the names are gone.
_RETIRED = {"png16": "control_png16 (a normalised picture) or depth_png16 (raw values)",
            "png8": "control_png8"}


class ControlImageError(ValueError):
    """A control image (a normalised picture) was given where raw depth values are needed."""


def check_format(format: str, allowed: tuple[str, ...] = OUTPUT_FORMATS) -> str:
    """Return ``format`` if it is one of ``allowed``; else a ValueError that lists them (and the new name of a
    retired one).

    Example:
        >>> check_format("npz")
        'npz'
    """
    if format in allowed:
        return format
    hint = f"; {format!r} is now {_RETIRED[format]}" if format in _RETIRED else ""
    raise ValueError(f"unknown format {format!r}; expected one of {', '.join(allowed)}{hint}")


def is_raw_format(format: str) -> bool:
    """Whether ``format`` stores raw depth values (``True``) or a control image (``False``).

    Example:
        >>> is_raw_format("depth_png16"), is_raw_format("control_png16")
        (True, False)
    """
    return check_format(format) in RAW_FORMATS


@dataclass
class DepthFile:
    """A depth map read by :func:`load_depth`.

    Attributes:
        depth: the values, float32; NaN where the file marks a pixel as missing.
        kind: what the values mean (``None`` for files without anydepth metadata).
        units: ``"relative"`` or ``"metres"`` (``None`` when unknown).
        intrinsics: :math:`3 \\times 3` camera matrix in pixels, if stored.
        extrinsics: world-to-camera :math:`3 \\times 4` / :math:`4 \\times 4`, if stored.
        metadata: everything stored (the fields above included).
        format: the file format, one of :data:`RAW_FORMATS`.

    Shape:
        depth: ``(H, W)``.
    """

    depth: np.ndarray
    kind: str | None = None
    units: str | None = None
    intrinsics: np.ndarray | None = None
    extrinsics: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = ""


def export_format(path: PathLike, format: str | None = None) -> str:
    """The raw depth format for ``path``: ``format`` if given (checked), else from the suffix
    (``.png`` -> ``depth_png16``).

    Example:
        >>> export_format("a/b_depth.exr")
        'exr'
    """
    if format is not None:
        return check_format(format, RAW_FORMATS)
    suffix = Path(os.fspath(path)).suffix.lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        raise ValueError(f"cannot tell the depth format of {os.fspath(path)!r} from its suffix {suffix!r}; use one of "
                         f"{', '.join(_SUFFIXES)} or pass format= ({', '.join(RAW_FORMATS)})") from None


def _as_map(depth: object) -> np.ndarray:
    if hasattr(depth, "detach") and hasattr(depth, "cpu"):
        depth = depth.detach().cpu().float().numpy()
    if not isinstance(depth, np.ndarray):
        raise TypeError(f"depth must be a numpy array or torch tensor of shape (H, W), got {type(depth).__name__}")
    if depth.dtype.kind != "f":
        raise TypeError(f"depth must hold floats (the raw depth values), got dtype {depth.dtype}")
    if depth.ndim != 2 or depth.size == 0:
        hint = "; save one map at a time, e.g. depth[i]" if depth.ndim == 3 else ""
        raise ValueError(f"depth must have shape (H, W) with H, W >= 1, got {tuple(depth.shape)}{hint}")
    return np.ascontiguousarray(depth, dtype=np.float32)


def _camera(value: object, name: str, shapes: tuple[tuple[int, int], ...]) -> np.ndarray | None:
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    a = np.asarray(value, dtype=np.float64)
    if a.shape not in shapes or not np.isfinite(a).all():
        raise ValueError(f"{name} must be a finite {' or '.join('x'.join(map(str, s)) for s in shapes)} matrix, "
                         f"got shape {a.shape}")
    return a


def _build_metadata(kind, intrinsics, extrinsics, metadata) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict of JSON-serialisable values, got {type(metadata).__name__}")
        meta.update(metadata)
    if kind is not None:
        meta["kind"] = check_kind(kind)
        meta["units"] = UNITS[kind]
    if intrinsics is not None:
        meta["intrinsics"] = intrinsics.tolist()
    if extrinsics is not None:
        meta["extrinsics"] = extrinsics.tolist()
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata must be JSON-serialisable (numbers, strings, lists, dicts; no NaN): {e}") from None
    return meta


def save_depth(
    path: PathLike,
    depth: Any,
    *,
    kind: str | None = None,
    format: str | None = None,
    intrinsics: Any = None,
    extrinsics: Any = None,
    metadata: dict[str, Any] | None = None,
    png16_range: tuple[float, float] | None = None,
) -> Path:
    """Write one raw depth map with its metadata (see the module docstring for the formats).

    Args:
        path: destination; the suffix picks the format unless ``format`` is given.
        depth: the values (numpy array or torch tensor; any float dtype, stored as float32).
        kind: what the values mean, one of :data:`anydepth.kinds.ALL_KINDS` (recommended).
        format: one of :data:`RAW_FORMATS`.
        intrinsics: camera matrix, :math:`3 \\times 3` in pixels.
        extrinsics: world-to-camera, :math:`3 \\times 4` or :math:`4 \\times 4`.
        metadata: extra JSON-serialisable fields (e.g. ``{"model": "v2-small"}``).
        png16_range: ``(low, high)`` values mapped to the ends of the 16-bit range (``depth_png16`` only); values
            outside are clipped. Default: the map's finite min and max. A fixed range (e.g. ``(0, 65.534)`` m
            for millimetre steps) keeps a sequence of files on one scale.

    Returns:
        ``path`` as a ``Path``.

    Shape:
        depth: ``(H, W)``.
    """
    fmt = export_format(path, format)
    d = _as_map(depth)
    meta = _build_metadata(kind, _camera(intrinsics, "intrinsics", ((3, 3),)),
                           _camera(extrinsics, "extrinsics", ((3, 4), (4, 4))), metadata)
    target = Path(os.fspath(path)).expanduser()
    if fmt == "depth_png16":
        return _save_png16(target, d, meta, png16_range)
    if fmt == "exr":
        return _save_exr(target, d, meta)
    if fmt == "npy":
        if meta:  # the sidecar first: a finished .npy (what resume looks for) always has its metadata
            text = json.dumps(meta, indent=1).encode()
            atomic_write(target.with_suffix(".json"), lambda f: f.write(text))
        return atomic_write(target, lambda f: np.save(f, d, allow_pickle=False))
    arrays: dict[str, np.ndarray] = {"depth": d, "metadata": np.array(json.dumps(meta))}
    for key in ("intrinsics", "extrinsics"):
        if key in meta:
            arrays[key] = np.asarray(meta[key], dtype=np.float64)
    return atomic_write(target, lambda f: np.savez_compressed(f, **arrays))


def _save_png16(target: Path, d: np.ndarray, meta: dict, png16_range) -> Path:
    finite = np.isfinite(d)
    if png16_range is None:
        lo = float(d[finite].min()) if finite.any() else 0.0
        hi = float(d[finite].max()) if finite.any() else 0.0
    else:
        lo, hi = (float(v) for v in png16_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"png16_range must be two finite numbers (low, high) with high > low, got {png16_range!r}")
    span = hi - lo
    scaled = (np.clip(d, lo, hi) - lo) / span if span > 0 else np.zeros_like(d)
    q = np.where(finite, 1 + np.rint(np.nan_to_num(scaled) * _PNG_STEPS), 0).astype("<u2")
    text = json.dumps({**meta, "content": "raw_depth", "png16": {"low": lo, "high": hi, "missing": 0}})
    return save_png16(target, q, text={_META_KEY: text})


def save_control_image(path: PathLike, image: Any, *, format: str = "control_png16",
                       metadata: dict[str, Any] | None = None) -> Path:
    """Write one control image (a normalised picture of depth) as a PNG that says what it is.

    Args:
        path: destination ``.png``.
        image: values in ``0..1`` (float; numpy or torch), grey ``(H, W)`` or RGB ``(H, W, 3)``; or already
            quantised ``uint16`` (``control_png16``) / ``uint8`` (``control_png8``).
        format: ``control_png16`` (16-bit grey, 65536 levels) or ``control_png8`` (8-bit grey or RGB).
        metadata: JSON-serialisable extras recorded with ``"content": "control_image"`` (e.g. the
            normalisation mode, so a reader knows how the picture was made).

    Returns:
        ``path`` as a ``Path``.

    Shape:
        image: ``(H, W)`` or, for ``control_png8``, ``(H, W, 3)``.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = save_control_image(os.path.join(tempfile.mkdtemp(), "c.png"), np.linspace(0, 1, 6).reshape(2, 3))
        >>> load_depth(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        anydepth.export.ControlImageError: ...c.png is a control image (a normalised picture of depth, ...
    """
    fmt = check_format(format, CONTROL_FORMATS)
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    text = {_META_KEY: json.dumps({**(metadata or {}), "content": _CONTROL, "format": fmt})}
    if fmt == "control_png16":
        if a.dtype != np.uint16:
            a = np.rint(np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1) * 65535).astype(np.uint16)
        return save_png16(path, a, text=text)
    if a.dtype != np.uint8:
        a = np.rint(np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1) * 255).astype(np.uint8)
    return save_png8(path, a, text=text)


def _openexr():
    try:
        import OpenEXR
    except ImportError:
        raise ImportError('EXR needs the OpenEXR package: pip install "anydepth[exr]" (or pip install OpenEXR); '
                          "or save as .npz / .npy / .png") from None
    return OpenEXR


def _save_exr(target: Path, d: np.ndarray, meta: dict) -> Path:
    exr = _openexr()
    header = {"compression": exr.ZIP_COMPRESSION, "type": exr.scanlineimage, _META_KEY: json.dumps(meta)}
    with atomic_open(target) as f, exr.File(header, {"Z": d}) as image:
        image.write(f.name)  # same file (inode) that atomic_open fsyncs and renames into place
    return target


def load_depth(path: PathLike, *, format: str | None = None) -> DepthFile:
    """Read raw depth written by :func:`save_depth` (or a plain 16-bit PNG / EXR / npy / npz of another tool).

    Files without anydepth metadata still load, with ``kind=None``: a 16-bit PNG gives values in ``0..1``
    (``q / 65535``), an EXR its ``Z`` (or ``Y``, or only) channel, an ``.npz`` its ``depth`` (or only) array.

    Args:
        path: the file.
        format: one of :data:`RAW_FORMATS` (default: from the suffix).

    Returns:
        :class:`DepthFile` with float32 ``(H, W)`` depth.

    Raises:
        ControlImageError: the file is a control image (anydepth's ``control_png16`` / ``control_png8``, or any
            8-bit or colour PNG): a picture, not depth values.
        ValueError: naming the file when it is missing or not a readable depth map.
    """
    fmt = export_format(path, format)
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise ValueError(f"cannot read depth file {p}: " + ("is a directory" if p.is_dir() else "file does not exist"))
    try:
        depth, meta = {"depth_png16": _load_png16, "exr": _load_exr, "npy": _load_npy, "npz": _load_npz}[fmt](p)
    except (ImportError, ControlImageError):
        raise
    except (OSError, ValueError, KeyError, EOFError, SyntaxError, RuntimeError) as e:
        raise ValueError(f"cannot read depth file {p} as {fmt}: {e}") from e
    if depth.ndim != 2:
        raise ValueError(f"cannot read depth file {p}: expected one (H, W) map, found shape {depth.shape}")
    kind = meta.get("kind")
    cam = {k: np.asarray(meta[k], dtype=np.float64) if k in meta else None for k in ("intrinsics", "extrinsics")}
    return DepthFile(np.ascontiguousarray(depth, dtype=np.float32), kind, meta.get("units"), cam["intrinsics"],
                     cam["extrinsics"], meta, fmt)


def _load_png16(p: Path) -> tuple[np.ndarray, dict]:
    with Image.open(p) as im:
        im.load()
        text = getattr(im, "text", {}) or {}
        meta = json.loads(text[_META_KEY]) if _META_KEY in text else {}
        if meta.get("content") == _CONTROL:
            raise ControlImageError(
                f"{p} is a control image (a normalised picture of depth, {meta.get('format', 'PNG')}"
                + (f", mode {meta['normalize']}" if "normalize" in meta else "")
                + "), not raw depth: its levels are not depth values. Load the raw depth saved beside it "
                  "(formats npy, npz, exr or depth_png16), or feed the picture to an image input instead")
        if im.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            raise ControlImageError(
                f"{p} is a {im.mode!r} picture (8-bit or colour), not raw depth; raw depth files are npy, npz, exr "
                "or 16-bit PNGs written as depth_png16")
        q = np.asarray(im).astype(np.int64)
    rng = meta.get("png16")
    if rng is None:
        return (q / 65535.0).astype(np.float32), meta
    lo, hi = float(rng["low"]), float(rng["high"])
    d = lo + (q - 1).astype(np.float64) * ((hi - lo) / _PNG_STEPS)
    return np.where(q == 0, np.nan, d).astype(np.float32), meta


def _load_exr(p: Path) -> tuple[np.ndarray, dict]:
    exr = _openexr()
    with exr.File(str(p), separate_channels=True) as f:
        header = f.header()
        channels = f.channels()
        name = next((c for c in ("Z", "Y") if c in channels), None)
        if name is None:
            if len(channels) != 1:
                raise ValueError(f"no 'Z' or 'Y' channel among {sorted(channels)}")
            name = next(iter(channels))
        depth = np.array(channels[name].pixels, dtype=np.float32)
        meta = header.get(_META_KEY)  # read while the file is open: the header is a view into it
        meta = str(meta) if isinstance(meta, str) else None
    return depth, (json.loads(meta) if meta else {})


def _load_npy(p: Path) -> tuple[np.ndarray, dict]:
    depth = np.load(p, allow_pickle=False)
    side = p.with_suffix(".json")
    meta = json.loads(side.read_text()) if side.is_file() else {}
    return depth, meta


def _load_npz(p: Path) -> tuple[np.ndarray, dict]:
    with np.load(p, allow_pickle=False) as z:
        names = list(z.files)
        key = "depth" if "depth" in names else (names[0] if len(names) == 1 else None)
        if key is None:
            raise ValueError(f"no 'depth' array among {names}")
        depth = z[key]
        meta = json.loads(str(z["metadata"])) if "metadata" in names else {}
    return depth, meta
