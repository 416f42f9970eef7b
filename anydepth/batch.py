"""Depth for whole datasets: a streaming local engine and a Ray Data engine with identical outputs.

Both engines get the same chunks of ``batch_size`` images, in list order (:func:`plan_chunks`), and
hand every chunk to a :class:`ChunkWorker` (read in threads -> one batched estimate ->
batched normalisation -> parallel atomic writes). The same chunks through the same code give the same
files, whichever engine ran them (pin ``threads`` to compare CPU runs bit for bit).

* ``local``: one process. Reads run ahead in a thread pool (``prefetch`` chunks), writes run behind
  in another; at most ``prefetch + 1`` chunks of decoded images and two chunks of pending writes are
  held, so memory stays bounded whatever the dataset size.
* ``ray``: Ray Data. A dataset of chunks is mapped by an actor pool, one model-holding
  :class:`ChunkWorker` per worker (per GPU when the cluster has GPUs). Workers write directly to
  ``out``, which must be a path every node sees (shared storage).

Resume: an output that exists is complete (writes are atomic: temp file + rename), so it is skipped;
an interrupted run picks up where it stopped. ``overwrite=True`` recomputes everything.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .estimator import DepthEstimator, DepthResult
from .export import OUTPUT_FORMATS, SUFFIX, check_format, is_raw_format, save_control_image, save_depth
from .io import list_images, read_image
from .kinds import METRIC_DEPTH
from .normalize import COLORMAPS, NORMALIZE_MODES, apply_colormap, normalize_depth, to_uint8, to_uint16

__all__ = ["ENGINES", "FORMATS", "BatchReport", "ChunkWorker", "OutputSpec", "plan_chunks", "plan_jobs", "run_batch",
           "run_local", "run_ray"]

FORMATS: tuple[str, ...] = OUTPUT_FORMATS
"""Control images (``control_png16``, ``control_png8``) and raw depth (``npy``, ``npz``, ``exr``, ``depth_png16``),
see :mod:`anydepth.export`."""
ENGINES: tuple[str, ...] = ("local", "ray")

Job = tuple[Path, Path]
"""``(source image, output file)``."""


# --------------------------------------------------------------------------------------------------
# planning: where every output goes (one layout for every command, collision-free)


def _read_list_file(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read image list {path}: {e}") from e
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(os.path.expanduser(line))
            out.append(p if p.is_absolute() else path.parent / p)
    if not out:
        raise ValueError(f"image list {path} has no paths (one image path per line)")
    return out


def _common_root(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent.absolute()) for p in paths]))


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def plan_layout(inputs: Sequence[str | os.PathLike], *, recursive: bool = False,
                exclude: str | os.PathLike | None = None) -> list[tuple[Path, PurePosixPath]]:
    """Every input image with the output stem it gets, relative to the output folder; no two collide.

    The rules, the same for every command that writes one output per image:

    * a **folder** ``F``: each image keeps its path relative to the folder's parent, so
      ``F/sub/x.png`` -> ``F/sub/x`` (two folders holding ``x.png`` give ``a/x`` and ``b/x``);
    * a **glob pattern** or a ``.txt`` **list** (one path per line, relative to the list): paths relative to the
      matches' common folder;
    * **image files** given one by one: their stem (``x``).

    Clashes left after that are resolved, never refused: images of one folder sharing a stem keep their
    extension (``x_png``, ``x_jpg``), and anything still equal gets ``_2``, ``_3`` ... in input order. An image
    listed twice is computed once. Images under ``exclude`` (the output folder) are skipped, so outputs written
    inside an input folder are never read back as inputs.

    Args:
        inputs: folders, glob patterns, image files or ``.txt`` lists.
        recursive: descend into sub-folders (and let ``**`` span folders).
        exclude: a folder whose images are not inputs (the output folder).

    Returns:
        ``(source, stem)`` pairs in input order; ``stem`` is a relative POSIX path without suffix.

    Raises:
        ValueError: an input that does not exist or holds no image, naming it.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("a/x.png", "b/x.png", "b/x.jpg"):
        ...     (root / name).parent.mkdir(exist_ok=True); _ = (root / name).write_bytes(b"")
        >>> [str(stem) for _, stem in plan_layout([root / "a", root / "b"])]
        ['a/x', 'b/x_jpg', 'b/x_png']
        >>> [str(stem) for _, stem in plan_layout([root / "a/x.png", root / "b/x.png"])]
        ['x', 'x_2']
    """
    skip = Path(os.fspath(exclude)).resolve() if exclude is not None else None
    pairs: list[tuple[Path, PurePosixPath]] = []
    seen_sources: set[Path] = set()
    for spec in inputs:
        p = Path(os.path.expanduser(os.fspath(spec)))
        if p.suffix.lower() == ".txt" and p.is_file():
            images = _read_list_file(p)
            root = _common_root(images)
        elif p.is_dir():
            images = list_images(p, recursive=recursive)
            root = p.absolute().parent if p.resolve().name else p.absolute()
        elif p.is_file():
            images, root = [p], p.absolute().parent
        else:
            images = list_images(p, recursive=recursive)
            root = _common_root(images)
        for src in images:
            key = src.resolve()
            if key in seen_sources or (skip is not None and _is_inside(src, skip)):
                continue
            seen_sources.add(key)
            rel = PurePosixPath(src.absolute().relative_to(root).as_posix())
            pairs.append((src, rel))
    if not pairs:
        raise ValueError(f"no images to process in {', '.join(map(str, inputs))}" +
                         (f" (images inside the output folder {skip} are not inputs)" if skip else ""))
    groups: dict[PurePosixPath, list[int]] = {}
    for i, (_, rel) in enumerate(pairs):
        groups.setdefault(rel.parent / rel.stem, []).append(i)
    stems: list[PurePosixPath] = [PurePosixPath()] * len(pairs)
    for stem, members in groups.items():
        suffixes = [pairs[i][1].suffix for i in members]
        for i in members:
            clash = len(members) > 1 and suffixes.count(pairs[i][1].suffix) < len(members)
            stems[i] = stem.parent / f"{stem.name}_{pairs[i][1].suffix[1:].lower()}" if clash else stem
    stems = unique_stems(stems)
    return [(src, stem) for (src, _), stem in zip(pairs, stems)]


def unique_stems(stems: Sequence[PurePosixPath]) -> list[PurePosixPath]:
    """Make output stems distinct: the first of equal stems keeps its name, the next get ``_2``, ``_3`` ...

    Example:
        >>> [str(s) for s in unique_stems([PurePosixPath("x"), PurePosixPath("y"), PurePosixPath("x")])]
        ['x', 'y', 'x_2']
    """
    taken: set[PurePosixPath] = set(stems)
    seen: set[PurePosixPath] = set()
    out = []
    for stem in stems:
        if stem in seen:
            n = 2
            while (candidate := stem.parent / f"{stem.name}_{n}") in taken:
                n += 1
            taken.add(candidate)
            stem = candidate
        seen.add(stem)
        out.append(stem)
    return out


def output_name(stem: PurePosixPath, fmt: str) -> str:
    """The output file for an image's layout ``stem`` in format ``fmt`` (relative POSIX path).

    Control images and raw depth share ``_depth``; raw depth as a PNG is ``_depth_raw.png`` so it never takes a
    control image's name.

    Example:
        >>> output_name(PurePosixPath("a/x"), "control_png16"), output_name(PurePosixPath("x"), "depth_png16")
        ('a/x_depth.png', 'x_depth_raw.png')
    """
    tag = "_depth_raw" if fmt == "depth_png16" else "_depth"
    return f"{stem}{tag}{SUFFIX[check_format(fmt)]}"


def plan_jobs(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, fmt: str = "control_png16", *,
              recursive: bool = False) -> list[Job]:
    """Pair every input image with its output file under ``out`` (layout: :func:`plan_layout`).

    Args:
        inputs: folders, glob patterns, image files, or ``.txt`` files listing one image path per line.
        out: output root folder; images inside it are not inputs.
        fmt: one of :data:`FORMATS`.
        recursive: descend into sub-folders.

    Returns:
        ``(source, output)`` pairs in input order, every output distinct.

    Raises:
        ValueError: nothing found, or an unknown format.
    """
    check_format(fmt)
    out = Path(out)
    return [(src, out / output_name(stem, fmt)) for src, stem in plan_layout(inputs, recursive=recursive, exclude=out)]


def plan_chunks(jobs: list[Job], batch_size: int, *, overwrite: bool = False) -> tuple[list[list[Job]], int]:
    """Cut ``jobs`` into chunks of ``batch_size`` and drop outputs that exist (unless ``overwrite``).

    Chunks are cut from the full list before finished outputs are dropped, so a resumed run computes
    the remaining images in the same batches as an uninterrupted one (batch composition can move
    results by float rounding).

    Returns:
        The non-empty chunks and the number of outputs skipped.
    """
    chunks, skipped = [], 0
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i:i + batch_size]
        todo = chunk if overwrite else [j for j in chunk if not j[1].exists()]
        skipped += len(chunk) - len(todo)
        if todo:
            chunks.append(todo)
    return chunks, skipped


# --------------------------------------------------------------------------------------------------
# encoding and writing


@dataclass(frozen=True)
class OutputSpec:
    """How depth becomes files: the format and, for control images, the normalisation.

    Attributes:
        format: one of :data:`FORMATS`: a control image (``control_png16``, ``control_png8``) or raw depth
            (``npy``, ``npz``, ``exr``, ``depth_png16``: the values as the model gives them, with kind and units).
        normalize, near, far, invert, gamma: see :func:`anydepth.normalize.normalize_depth` (control images).
        colormap: an RGB 8-bit preview (``control_png8`` only), one of :data:`~anydepth.normalize.COLORMAPS`.
    """

    format: str = "control_png16"
    normalize: str = "v2_style"
    near: float | None = None
    far: float | None = None
    invert: bool = False
    gamma: float = 1.0
    colormap: str | None = None

    @property
    def raw(self) -> bool:
        """Whether the files hold raw depth values (``True``) or control images."""
        return is_raw_format(self.format)

    def check(self, kind: str | None = None) -> None:
        """Raise a ValueError for an impossible combination (``kind``: what the model gives)."""
        check_format(self.format)
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {self.normalize!r}")
        if self.colormap is not None and (self.format != "control_png8" or self.colormap not in COLORMAPS):
            raise ValueError(f"colormap {self.colormap!r} needs format control_png8 and one of {', '.join(COLORMAPS)}")
        if kind is not None and not self.raw and self.normalize.startswith("metric") and kind != METRIC_DEPTH:
            raise ValueError(f"normalize={self.normalize} needs a metric model, but the model gives {kind}; "
                             "use v2_style or minmax")

    def encode(self, result: DepthResult) -> list[np.ndarray]:
        """The array to write for each image of ``result`` (batched per image size).

        Raw formats get the float32 values; control images the quantised picture (uint16 / uint8).
        """
        maps = result.maps()
        if self.raw:
            return [m.float().cpu().numpy() for m in maps]
        arrays: list[np.ndarray | None] = [None] * len(maps)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, m in enumerate(maps):
            groups.setdefault(tuple(m.shape), []).append(i)
        for members in groups.values():
            stack = result.depth if len(groups) == 1 and isinstance(result.depth, torch.Tensor) else \
                torch.stack([maps[i] for i in members])
            x = normalize_depth(stack, result.kind, self.normalize, near=self.near, far=self.far,
                                invert=self.invert, gamma=self.gamma)  # [b, H, W]
            if self.format == "control_png16":
                enc = to_uint16(x)
            elif self.colormap:
                enc = to_uint8(apply_colormap(x, self.colormap))
            else:
                enc = to_uint8(x)
            for i, a in zip(members, enc):
                arrays[i] = a
        return arrays  # type: ignore[return-value]

    def metadata(self, result: DepthResult) -> dict[str, Any]:
        """What the files record besides the pixels: the model, and how a control image was made."""
        meta: dict[str, Any] = {"model": result.model_name}
        if result.max_depth:
            meta["max_depth_m"] = result.max_depth
        if not self.raw:
            meta.update(kind=result.kind, normalize=self.normalize, invert=self.invert, gamma=self.gamma,
                        **{k: v for k, v in (("near", self.near), ("far", self.far), ("colormap", self.colormap))
                           if v is not None})
        return meta

    def write(self, path: Path, array: np.ndarray, kind: str | None = None, metadata: dict | None = None) -> None:
        """Write one encoded array atomically (raw depth with ``kind``; a control image with its settings)."""
        if self.raw:
            save_depth(path, array, kind=kind, format=self.format, metadata=metadata)
        else:
            save_control_image(path, array, format=self.format, metadata=metadata)


# --------------------------------------------------------------------------------------------------
# the worker shared by both engines


class ChunkWorker:
    """Holds one depth model; reads, estimates and writes chunks of images.

    Args:
        estimator: a :class:`~anydepth.estimator.DepthEstimator` or the keyword arguments to build one
            (what a Ray actor receives).
        spec: the output format.
        io_workers: threads for reading and for writing.
        threads: torch CPU threads for this process (``None``: leave as is).
    """

    def __init__(self, estimator: DepthEstimator | dict, spec: OutputSpec, *, io_workers: int = 4,
                 threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        self.estimator = estimator if isinstance(estimator, DepthEstimator) else DepthEstimator(**estimator)
        spec.check(self.estimator.kind)
        self.spec = spec
        self.readers = ThreadPoolExecutor(max(1, io_workers), thread_name_prefix="anydepth-read")
        self.writers = ThreadPoolExecutor(max(1, io_workers), thread_name_prefix="anydepth-write")

    def read(self, chunk: list[Job]) -> list[Future]:
        """Start decoding the chunk's images in the reader threads."""
        return [self.readers.submit(read_image, src) for src, _ in chunk]

    def process(self, chunk: list[Job], reads: list[Future]) -> tuple[list[tuple[Job, Future]], list[tuple[Path, str]]]:
        """Estimate the chunk in one call and start its writes.

        When the batched call fails, each image is tried alone, so one image the network cannot take costs
        only itself (out-of-memory is handled inside the estimator, which halves the batch first).

        Returns:
            ``(job, write future)`` pairs, and ``(source, message)`` for images that could not be read or
            estimated.
        """
        loaded, failed = [], []
        for job, future in zip(chunk, reads):
            try:
                loaded.append((job, future.result()))
            except ValueError as e:
                failed.append((job[0], str(e)))
        if not loaded:
            return [], failed
        try:
            parts = [(loaded, self._estimate([img for _, img in loaded]))]
        except Exception:  # noqa: BLE001 - isolate the image at fault below
            parts = []
            for job, img in loaded:
                try:
                    parts.append(([(job, img)], self._estimate([img])))
                except Exception as e:  # noqa: BLE001 - one bad image must not stop a million-image run; reported
                    message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
                    failed.append((job[0], f"depth failed: {message}"))
        writes = []
        for members, (arrays, kind, meta) in parts:
            for ((src, dst), _), a in zip(members, arrays):
                writes.append(((src, dst), self.writers.submit(self.spec.write, dst, a, kind, meta)))
        return writes, failed

    def _estimate(self, images: list) -> tuple[list[np.ndarray], str, dict]:
        result = self.estimator.estimate(images)
        return self.spec.encode(result), result.kind, self.spec.metadata(result)

    def run(self, chunk: list[Job]) -> list[tuple[Path, str]]:
        """Read, estimate and write one chunk; returns ``(source, message)`` failures."""
        writes, failed = self.process(chunk, self.read(chunk))
        for (src, _), future in writes:
            try:
                future.result()
            except (OSError, ValueError, TypeError) as e:
                failed.append((src, f"cannot write: {e}"))
        return failed

    def close(self) -> None:
        self.readers.shutdown(wait=True, cancel_futures=True)
        self.writers.shutdown(wait=True)


@dataclass
class BatchReport:
    """What a run did.

    Attributes:
        done: outputs written by this run.
        skipped: outputs that existed already (resume) and were left as they were.
        failed: ``(source image, message)`` for images without an output.
        seconds: wall time of the run.
        total: images planned (``done + skipped + len(failed)`` after a complete run).
        on_disk: planned outputs present on disk at the end, counted (not inferred).
    """

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    total: int = 0
    on_disk: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


class BatchInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C); every output on disk is complete and a rerun resumes.

    Attributes:
        report: what was done until then (``on_disk`` counted after the in-flight writes finished).
    """

    def __init__(self, report: BatchReport) -> None:
        super().__init__(f"interrupted: {report.on_disk} of {report.total} written")
        self.report = report


def prepare_output_folder(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and check that files can be written there, before any work starts.

    Raises:
        ValueError: naming the folder and the reason (a file in the way, no permission, read-only disk).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "file"; _ = f.write_text("")
        >>> prepare_output_folder(f / "out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: cannot use .../file/out as the output folder: ... is a file, not a folder; choose another --out
    """
    folder = Path(os.path.expanduser(os.fspath(out)))
    blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ValueError(f"cannot use {folder} as the output folder: {blocker} is a file, not a folder; "
                         "choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".anydepth-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to the output folder {folder}: {e.strerror or e}; choose another --out "
                         "or fix its permissions") from None
    return folder


Progress = Callable[[int], None]


# --------------------------------------------------------------------------------------------------
# engines


def run_local(
    chunks: list[list[Job]],
    estimator: DepthEstimator | dict,
    spec: OutputSpec,
    *,
    io_workers: int = 4,
    prefetch: int = 2,
    threads: int | None = None,
    progress: Progress | None = None,
) -> BatchReport:
    """Streaming engine in this process: threaded reads -> batched inference -> threaded writes.

    Args:
        chunks: ``(source, output)`` pairs to compute, one ``estimate`` call per chunk
            (:func:`plan_chunks`).
        estimator: a DepthEstimator or its keyword arguments.
        spec: output format.
        io_workers: reader threads and writer threads.
        prefetch: chunks read ahead of the one being computed, >= 1 (memory: ``prefetch + 1`` chunks).
        threads: torch CPU threads during the run (restored afterwards); ``None`` leaves them.
        progress: ``callback(n)`` with the number of images just finished.

    Returns:
        A :class:`BatchReport` (``skipped`` is 0: the caller filtered the jobs).
    """
    if not isinstance(prefetch, int) or prefetch < 1:
        raise ValueError(f"prefetch must be a positive integer (chunks read ahead), got {prefetch!r}")
    start = time.perf_counter()
    report = BatchReport()
    previous_threads = torch.get_num_threads()
    pending_writes = 2 * max((len(c) for c in chunks), default=1)
    queue = iter(chunks)
    worker: ChunkWorker | None = None
    reading: deque[tuple[list[Job], list[Future]]] = deque()
    writing: deque[tuple[Job, Future]] = deque()

    def finish(job: Job, future: Future) -> None:
        try:
            future.result()
            report.done += 1
        except (OSError, ValueError, TypeError) as e:
            report.failed.append((str(job[0]), f"cannot write: {e}"))
        if progress:
            progress(1)

    try:
        worker = ChunkWorker(estimator, spec, io_workers=io_workers, threads=threads)
        for chunk in queue:
            reading.append((chunk, worker.read(chunk)))
            if len(reading) >= prefetch:
                break
        while reading:
            chunk, reads = reading.popleft()
            nxt = next(queue, None)
            if nxt is not None:
                reading.append((nxt, worker.read(nxt)))
            writes, failed = worker.process(chunk, reads)
            for src, message in failed:
                report.failed.append((str(src), message))
                if progress:
                    progress(1)
            writing.extend(writes)
            while len(writing) > pending_writes:
                finish(*writing.popleft())
        while writing:
            finish(*writing.popleft())
    finally:
        if worker is not None:
            worker.close()
        if threads:
            torch.set_num_threads(previous_threads)
    report.seconds = time.perf_counter() - start
    return report


class _RayChunkWorker:
    """Ray Data actor: one :class:`ChunkWorker` (one model) per actor; one row = one chunk."""

    def __init__(self, estimator: dict, spec: OutputSpec, io_workers: int, threads: int | None) -> None:
        self.worker = ChunkWorker(estimator, spec, io_workers=io_workers, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sources, errors = [], []
        for src_list, dst_list in zip(batch["src"], batch["dst"]):
            chunk = [(Path(s), Path(d)) for s, d in zip(src_list, dst_list)]
            failed = dict((str(s), m) for s, m in self.worker.run(chunk))
            sources += [str(s) for s, _ in chunk]
            errors += [failed.get(str(s), "") for s, _ in chunk]
        return {"src": np.array(sources, dtype=object), "error": np.array(errors, dtype=object)}


def run_ray(
    chunks: list[list[Job]],
    estimator: dict,
    spec: OutputSpec,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1,
    io_workers: int = 4,
    threads: int | None = None,
    progress: Progress | None = None,
) -> BatchReport:
    """Ray Data engine: the same chunks as :func:`run_local`, mapped by a pool of model-holding actors.

    Connects to ``address`` (``"auto"``, ``"ray://head:10001"``, ...) or starts a local Ray when Ray is
    not running yet; a Ray that this call started is shut down at the end. Every node needs anydepth
    installed, the model reachable (a catalogue name downloads per node; or a path on shared
    storage) and the output folder on shared storage.

    Args:
        chunks: ``(source, output)`` pairs, one ``estimate`` call per chunk (:func:`plan_chunks`);
            paths are made absolute (every node must see them at the same place).
        estimator: the DepthEstimator keyword arguments (each actor builds its own).
        spec: output format.
        address: Ray cluster address; ``None`` starts or reuses a local Ray.
        workers: actors; default one per GPU of the cluster, or one per ``cpus_per_worker`` CPUs.
        gpus_per_worker: GPUs per actor; default 1 when the cluster has GPUs, else 0.
        cpus_per_worker: CPUs reserved per actor.
        io_workers: reader / writer threads per actor.
        threads: torch CPU threads per actor (default: ``cpus_per_worker``).
        progress: ``callback(n)`` with the number of images just finished.

    Returns:
        A :class:`BatchReport`.
    """
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ValueError("the ray engine needs Ray Data: pip install 'ray[data]' (or anydepth[ray])") from e

    start = time.perf_counter()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        resources = ray.cluster_resources()
        cluster_gpus = int(resources.get("GPU", 0))
        if gpus_per_worker is None:
            gpus_per_worker = 1 if cluster_gpus else 0
        if workers is None:
            workers = max(1, int(cluster_gpus // gpus_per_worker) if gpus_per_worker else
                          int(resources.get("CPU", 1) // max(cpus_per_worker, 1e-3)))
        workers = max(1, min(workers, len(chunks)))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        rows = [{"src": [str(s.absolute()) for s, _ in c], "dst": [str(d.absolute()) for _, d in c]} for c in chunks]
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), max(1, 4 * workers)))
        ds = ds.map_batches(
            _RayChunkWorker,
            fn_constructor_kwargs=dict(estimator=estimator, spec=spec, io_workers=io_workers,
                                       threads=threads or max(1, int(cpus_per_worker))),
            batch_size=1,
            batch_format="numpy",
            concurrency=workers,
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
        )
        report = BatchReport()
        for row in ds.iter_rows():
            if row["error"]:
                report.failed.append((row["src"], row["error"]))
            else:
                report.done += 1
            if progress:
                progress(1)
    finally:
        if started:
            ray.shutdown()
    report.seconds = time.perf_counter() - start
    return report


def run_batch(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    engine: str = "local",
    spec: OutputSpec | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    recursive: bool = False,
    io_workers: int = 4,
    prefetch: int = 2,
    threads: int | None = None,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1,
    progress: bool | Progress = True,
    **estimator: Any,
) -> BatchReport:
    """Depth for a whole dataset with resume: plan, skip finished outputs, run an engine.

    Args:
        inputs, recursive: the dataset (see :func:`plan_jobs`).
        out: output root folder.
        engine: ``"local"`` or ``"ray"``.
        spec: output format and normalisation (default 16-bit PNG, ``v2_style``).
        batch_size: images per chunk / estimate call.
        overwrite: recompute outputs that exist.
        io_workers, prefetch, threads: see :func:`run_local`.
        address, workers, gpus_per_worker, cpus_per_worker: see :func:`run_ray`.
        progress: ``True`` for a tqdm bar, ``False``, or ``callback(n)``.
        **estimator: :class:`~anydepth.estimator.DepthEstimator` keyword arguments (``model``,
            ``device``, ``dtype``, ``input_size``, ``models_dir`` ...).

    Returns:
        A :class:`BatchReport`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec = spec or OutputSpec()
    spec.check()
    jobs = plan_jobs(inputs, out, spec.format, recursive=recursive)
    prepare_output_folder(out)
    chunks, skipped = plan_chunks(jobs, batch_size, overwrite=overwrite)
    if not chunks:
        return BatchReport(skipped=skipped, total=len(jobs), on_disk=_count_on_disk(jobs))
    estimator = dict(estimator, batch_size=batch_size)
    bar = None
    callback: Progress | None = progress if callable(progress) else None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs) - skipped, unit="img", desc=f"depth ({engine})")
        callback = bar.update
    try:
        if engine == "local":
            report = run_local(chunks, estimator, spec, io_workers=io_workers, prefetch=prefetch, threads=threads,
                               progress=callback)
        else:
            report = run_ray(chunks, estimator, spec, address=address, workers=workers,
                             gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, io_workers=io_workers,
                             threads=threads, progress=callback)
    except KeyboardInterrupt:
        # run_local has let the writes in flight finish (each is atomic): count what is complete.
        on_disk = _count_on_disk(jobs)
        raise BatchInterrupted(BatchReport(done=on_disk - skipped, skipped=skipped, total=len(jobs),
                                           on_disk=on_disk)) from None
    finally:
        if bar is not None:
            bar.close()
    report.skipped = skipped
    report.total = len(jobs)
    report.on_disk = _count_on_disk(jobs)
    return report


def _count_on_disk(jobs: list[Job]) -> int:
    return sum(dst.is_file() for _, dst in jobs)
