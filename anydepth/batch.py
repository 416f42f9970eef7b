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
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .estimator import DepthEstimator, DepthResult
from .io import list_images, read_image, save_npy, save_png8, save_png16
from .kinds import METRIC_DEPTH
from .normalize import COLORMAPS, NORMALIZE_MODES, apply_colormap, normalize_depth, to_uint8, to_uint16

__all__ = ["ENGINES", "FORMATS", "BatchReport", "ChunkWorker", "OutputSpec", "plan_chunks", "plan_jobs", "run_batch",
           "run_local", "run_ray"]

FORMATS: tuple[str, ...] = ("png16", "png8", "npy")
"""``png16``/``png8``: the normalised control image; ``npy``: the raw float32 depth (never normalised)."""
SUFFIX = {"png16": ".png", "png8": ".png", "npy": ".npy"}
ENGINES: tuple[str, ...] = ("local", "ray")

Job = tuple[Path, Path]
"""``(source image, output file)``."""


# --------------------------------------------------------------------------------------------------
# planning


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


def plan_jobs(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, fmt: str = "png16", *,
              recursive: bool = False) -> list[Job]:
    """Pair every input image with its output file.

    Inputs are folders (their images; sub-folders with ``recursive``), glob patterns, image files,
    or ``.txt`` files listing one image path per line (relative to the list's folder). Outputs mirror
    each input's folder structure under ``out`` as ``<stem>_depth.png`` / ``.npy``; images that share
    a stem in one folder (``a.png``, ``a.jpg``) keep their extension in the name (``a_png_depth.png``).

    Args:
        inputs: the dataset.
        out: output root folder.
        fmt: one of :data:`FORMATS`.
        recursive: descend into sub-folders.

    Returns:
        ``(source, output)`` pairs in input order.

    Raises:
        ValueError: nothing found, an unknown format, or two inputs mapping to one output file.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    pairs: list[tuple[Path, Path]] = []  # (source, path relative to out, without the name suffix)
    for spec in inputs:
        p = Path(os.path.expanduser(os.fspath(spec)))
        if p.suffix.lower() == ".txt" and p.is_file():
            images = _read_list_file(p)
            root = _common_root(images)
        elif p.is_dir():
            images, root = list_images(p, recursive=recursive), p
        else:
            images = list_images(p, recursive=recursive)
            root = _common_root(images)
        pairs += [(src, src.absolute().relative_to(root.absolute())) for src in images]
    stems: dict[tuple[Path, str], int] = {}
    for _, rel in pairs:
        key = (rel.parent, rel.stem)
        stems[key] = stems.get(key, 0) + 1
    jobs: list[Job] = []
    seen: dict[Path, Path] = {}
    for src, rel in pairs:
        unique = stems[(rel.parent, rel.stem)] == 1
        name = (f"{rel.stem}_depth" if unique else f"{rel.stem}_{rel.suffix[1:]}_depth") + SUFFIX[fmt]
        dst = out / rel.parent / name
        if dst in seen:
            raise ValueError(f"{seen[dst]} and {src} would both be written to {dst}; "
                             "run the folders separately or list the images in one .txt file")
        seen[dst] = src
        jobs.append((src, dst))
    return jobs


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
    """How depth becomes files: the format and, for PNGs, the normalisation.

    Attributes:
        format: one of :data:`FORMATS`.
        normalize, near, far, invert, gamma: see :func:`anydepth.normalize.normalize_depth`.
        colormap: an RGB 8-bit preview (``png8`` only), one of :data:`~anydepth.normalize.COLORMAPS`.
    """

    format: str = "png16"
    normalize: str = "v2_style"
    near: float | None = None
    far: float | None = None
    invert: bool = False
    gamma: float = 1.0
    colormap: str | None = None

    def check(self, kind: str | None = None) -> None:
        """Raise a ValueError for an impossible combination (``kind``: what the model gives)."""
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {self.normalize!r}")
        if self.colormap is not None and (self.format != "png8" or self.colormap not in COLORMAPS):
            raise ValueError(f"colormap {self.colormap!r} needs format png8 and one of {', '.join(COLORMAPS)}")
        if kind is not None and self.format != "npy" and self.normalize.startswith("metric") and kind != METRIC_DEPTH:
            raise ValueError(f"normalize={self.normalize} needs a metric model, but the model gives {kind}; "
                             "use v2_style or minmax")

    def encode(self, result: DepthResult) -> list[np.ndarray]:
        """The array to write for each image of ``result`` (batched per image size)."""
        maps = result.maps()
        if self.format == "npy":
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
            if self.format == "png16":
                enc = to_uint16(x)
            elif self.colormap:
                enc = to_uint8(apply_colormap(x, self.colormap))
            else:
                enc = to_uint8(x)
            for i, a in zip(members, enc):
                arrays[i] = a
        return arrays  # type: ignore[return-value]

    def write(self, path: Path, array: np.ndarray) -> None:
        if self.format == "npy":
            save_npy(path, array)
        elif self.format == "png16":
            save_png16(path, array)
        else:
            save_png8(path, array)


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

        Returns:
            ``(job, write future)`` pairs, and ``(source, message)`` for images that could not be read
            (or whose batch failed in the network: every image of it is reported).
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
            result = self.estimator.estimate([img for _, img in loaded])
            arrays = self.spec.encode(result)
        except Exception as e:  # noqa: BLE001 - one bad chunk must not stop a million-image run; reported
            message = f"depth failed for this batch: {type(e).__name__}: {e}"
            return [], failed + [(job[0], message) for job, _ in loaded]
        writes = [((src, dst), self.writers.submit(self.spec.write, dst, a)) for ((src, dst), _), a in zip(loaded, arrays)]
        return writes, failed

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
    """What a run did. ``failed``: ``(source image, message)``."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


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
    chunks, skipped = plan_chunks(jobs, batch_size, overwrite=overwrite)
    if not chunks:
        return BatchReport(skipped=skipped)
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
    finally:
        if bar is not None:
            bar.close()
    report.skipped = skipped
    return report
