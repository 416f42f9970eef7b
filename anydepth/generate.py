"""Batch depth-conditioned generation: items in, images + control maps + metadata out.

An *item* is an input image with its prompt (and optionally a negative prompt and a seed). Items
come from a folder or glob of images (prompt from ``--prompt`` or a ``<stem>.txt`` caption beside
the image), a JSONL file (one ``{"image": ..., "prompt": ..., "negative": ..., "seed": ...}`` per
line) or a CSV file with those columns. :func:`generate` runs each item through a depth estimator
and a depth-conditioned diffusers pipeline and writes, atomically:

* ``<name>.png`` — the generated image;
* ``<name>_depth.png`` — the control image the pipeline saw (``control_png16``: 16-bit grey, near = white);
* ``<name>.json`` — metadata: source image, prompt, negative, seed, steps, size, pipeline,
  ControlNet, depth model and its kind, normalisation. Written last: its presence marks the item
  finished, so a second run skips it (resume).

Seeds are deterministic: an item's own seed, else ``seed + index`` (its position in the list), fed to
a CPU ``torch.Generator`` so the same seed gives the same image on any device. A bad item (no
prompt, unreadable image, a pipeline error) is recorded and the run goes on.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import torch

from .batch import plan_layout, unique_stems
from .estimator import DepthEstimator
from .fit import check_fit_mode
from .export import save_control_image
from .io import atomic_write, read_image
from .pipelines import control_inputs, default_pixels, depth_to_control

__all__ = ["GenerateReport", "GenerateSettings", "Item", "generate", "item_seed", "read_items"]

_IMAGE_KEYS = ("image", "image_path", "path", "file")
_NEGATIVE_KEYS = ("negative", "negative_prompt")
_NAME_KEYS = ("name", "id")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Item:
    """One generation job.

    Attributes:
        name: output file stem, unique in the list.
        image: the input image (``None`` when the list entry had none).
        prompt, negative, seed: per-item values; ``None`` falls back to the run's settings.
        where: where the item came from, for messages (``"items.jsonl:3"`` or the image path).
        error: a problem found while reading the list (the item then fails without running).
    """

    name: str
    image: Path | None
    prompt: str | None = None
    negative: str | None = None
    seed: int | None = None
    where: str = ""
    error: str | None = None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value)
    return value if value.strip() else None


def _entry_to_item(entry: Any, base: Path, where: str, line: int) -> Item:
    if not isinstance(entry, dict):
        return Item(f"line-{line}", None, where=where, error=f"{where}: expected an object with 'image' and 'prompt', "
                                                   f"got {type(entry).__name__}")
    image = next((entry[k] for k in _IMAGE_KEYS if _text(entry.get(k))), None)
    name = next((str(entry[k]) for k in _NAME_KEYS if _text(entry.get(k))), None)
    negative = next((_text(entry[k]) for k in _NEGATIVE_KEYS if k in entry), None)
    item = Item(name or (Path(str(image)).stem if image else f"line-{line}"), None, _text(entry.get("prompt")), negative,
                where=where)
    if image is None:
        item.error = f"{where}: no image given (add an 'image' field with a file path)"
        return item
    path = Path(os.path.expanduser(str(image)))
    item.image = path if path.is_absolute() else base / path
    seed = entry.get("seed")
    if _text(seed) is not None:
        try:
            item.seed = int(seed)
        except (TypeError, ValueError):
            item.error = f"{where}: seed {seed!r} is not an integer"
    return item


def read_items(spec: str | os.PathLike, *, recursive: bool = False) -> list[Item]:
    """Read generation items from a folder, a glob, one image, a ``.jsonl`` or a ``.csv`` file.

    JSONL / CSV entries have ``image`` (a path, relative to the list file's folder) and optionally
    ``prompt``, ``negative`` (or ``negative_prompt``), ``seed`` and ``name``. For images listed from a
    folder or glob the prompt is read from a ``<stem>.txt`` file beside the image when there is one.
    Entries that cannot be parsed become items with ``error`` set, so one bad line does not stop
    the others.

    Args:
        spec: the folder, glob pattern, image file, or list file.
        recursive: descend into sub-folders (folder / ``**`` glob input).

    Returns:
        The items in list order, with unique ``name`` values: images of a folder or glob are named like every
        command's outputs (:func:`anydepth.batch.plan_layout`: ``photos/sub/x``), list entries by their ``name``
        or image stem; repeats get ``_2``, ``_3`` ...

    Raises:
        ValueError: nothing found, or an unreadable list file.
    """
    path = Path(os.path.expanduser(os.fspath(spec)))
    suffix = path.suffix.lower()
    items: list[Item] = []
    if suffix in (".jsonl", ".csv"):
        if not path.is_file():
            raise ValueError(f"item list {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read item list {path}: {e}") from e
        if suffix == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                where = f"{path.name}:{n}"
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as e:
                    items.append(Item(f"line-{n}", None, where=where, error=f"{where}: invalid JSON ({e.msg})"))
                    continue
                items.append(_entry_to_item(entry, path.parent, where, n))
        else:
            reader = csv.DictReader(text.splitlines())
            if not reader.fieldnames or not set(_IMAGE_KEYS) & {f.strip() for f in reader.fieldnames}:
                raise ValueError(f"{path} needs a header row with an 'image' column (and 'prompt', "
                                 f"optionally 'negative', 'seed', 'name'); got {reader.fieldnames}")
            for n, row in enumerate(reader, 2):
                row = {(k or "").strip(): v for k, v in row.items()}
                items.append(_entry_to_item(row, path.parent, f"{path.name}:{n}", n))
        if not items:
            raise ValueError(f"item list {path} has no entries")
    else:
        for image, stem in plan_layout([path], recursive=recursive):  # the layout every command uses
            caption = image.with_suffix(".txt")
            prompt = None
            if caption.is_file():
                prompt = _text(caption.read_text(encoding="utf-8", errors="replace").strip())
            items.append(Item(str(stem), image, prompt, where=str(image)))
    names = [PurePosixPath(*[_UNSAFE.sub("_", part).strip("._") or "item" for part in item.name.split("/")])
             for item in items]
    for item, name in zip(items, unique_stems(names)):
        item.name = str(name)
    return items


def item_seed(item: Item, index: int, base_seed: int) -> int:
    """The item's own seed, else ``base_seed + index`` (wrapped into ``0 .. 2**63 - 1``)."""
    return item.seed if item.seed is not None else (base_seed + index) % (2**63)


@dataclass
class GenerateSettings:
    """Options shared by every item of a run (an item's own prompt / negative / seed win).

    Attributes:
        prompt, negative: defaults for items without their own.
        seed: base seed; item ``i`` without a seed uses ``seed + i``.
        steps: denoising steps.
        guidance_scale: classifier-free guidance (``None``: the pipeline's default).
        control_scale: ControlNet conditioning scale (pipelines with a ControlNet).
        width, height: output size (snapped to the pipeline's multiple); default: the pipeline's
            default area (512² SD1.5, 1024² SDXL/Flux) with the input's aspect ratio.
        normalize, invert, gamma: depth -> control image (see :func:`anydepth.normalize.normalize_depth`).
        fit: ``"crop"``, ``"resize"`` or ``"pad"`` (:data:`anydepth.fit.FIT_MODES`) when the requested size has
            another aspect ratio; checked when the settings are made.
        overwrite: redo items whose metadata exists.
        extra: more keyword arguments for the pipeline call.
    """

    prompt: str | None = None
    negative: str | None = None
    seed: int = 0
    steps: int = 30
    guidance_scale: float | None = None
    control_scale: float = 1.0
    width: int | None = None
    height: int | None = None
    normalize: str = "v2_style"
    invert: bool = False
    gamma: float = 1.0
    fit: str = "crop"
    overwrite: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fit = check_fit_mode(self.fit)  # a bad word fails once, before any item runs


@dataclass
class GenerateReport:
    """What a run did: names of finished and skipped items, and ``(item, message)`` failures."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _save_png(path: Path, image: Any) -> None:
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def _save_json(path: Path, data: dict) -> None:
    payload = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    atomic_write(path, lambda f: f.write(payload))


def generate(
    pipe: Any,
    estimator: DepthEstimator,
    items: list[Item],
    out: str | os.PathLike,
    settings: GenerateSettings | None = None,
    *,
    pipeline_name: str | None = None,
    controlnet_name: str | None = None,
    progress: Callable[[int, int], None] | bool = True,
) -> GenerateReport:
    """Generate one depth-conditioned image per item, with resume and per-item failures.

    For each item: skip it when ``<out>/<name>.json`` exists (unless ``settings.overwrite``);
    otherwise read the image, estimate depth, make the control image at the generation size
    (:func:`~anydepth.pipelines.depth_to_control`), run ``pipe`` with a CPU generator seeded with
    :func:`item_seed`, and write the image, the control map and the metadata atomically. An item
    that fails (missing prompt, unreadable image, an error inside the pipeline) is recorded with
    its message; the others still run.

    Args:
        pipe: a depth-conditioned diffusers pipeline (e.g. from
            :func:`~anydepth.pipelines.load_depth_pipeline`).
        estimator: the depth estimator (``memory="offload"`` hands the GPU to the pipeline between
            items).
        items: from :func:`read_items`.
        out: output folder (created).
        settings: run options.
        pipeline_name, controlnet_name: recorded in the metadata (hub ids or paths).
        progress: ``True`` for a tqdm bar, ``False`` for none, or ``callback(done, total)``.

    Returns:
        A :class:`GenerateReport`.
    """
    settings = settings or GenerateSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = inspect.signature(type(pipe).__call__).parameters
    report = GenerateReport()
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="item", desc="generate")
    try:
        for index, item in enumerate(items):
            try:
                state = _one(pipe, params, estimator, item, index, out, settings, pipeline_name, controlnet_name)
            except Exception as e:  # noqa: BLE001 - one bad item must not stop the run; reported below
                message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
                report.failed.append((item.name, message))
            else:
                (report.done if state == "done" else report.skipped).append(item.name)
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(index + 1, len(items))
    finally:
        if bar is not None:
            bar.close()
    return report


def _one(pipe: Any, params: Any, estimator: DepthEstimator, item: Item, index: int, out: Path,
         settings: GenerateSettings, pipeline_name: str | None, controlnet_name: str | None) -> str:
    meta_path = out / f"{item.name}.json"
    if meta_path.exists() and not settings.overwrite:
        return "skipped"
    if item.error:
        raise ValueError(item.error)
    prompt = item.prompt or settings.prompt
    if not prompt:
        caption = item.image.with_suffix(".txt").name if item.image else f"{item.name}.txt"
        raise ValueError(f"no prompt for {item.where or item.name}: give the item a 'prompt', put a "
                         f"{caption} caption beside the image, or pass --prompt")
    negative = item.negative or settings.negative
    if negative and "negative_prompt" not in params:
        raise ValueError(f"{type(pipe).__name__} takes no negative prompt; drop 'negative' for this pipeline")
    image = read_image(item.image)
    seed = item_seed(item, index, settings.seed)
    start = time.perf_counter()

    result = estimator.estimate(image)
    pixels = None if settings.width or settings.height else default_pixels(pipe)
    control = depth_to_control(result, pipe=pipe, height=settings.height, width=settings.width, pixels=pixels,
                               fit=settings.fit, mode=settings.normalize, invert=settings.invert, gamma=settings.gamma)
    kwargs: dict[str, Any] = dict(control_inputs(pipe, control), prompt=prompt, num_inference_steps=settings.steps,
                                  generator=torch.Generator("cpu").manual_seed(seed), output_type="pil")
    if negative:
        kwargs["negative_prompt"] = negative
    if settings.guidance_scale is not None:
        kwargs["guidance_scale"] = settings.guidance_scale
    uses_control_scale = "controlnet_conditioning_scale" in params
    if uses_control_scale:
        kwargs["controlnet_conditioning_scale"] = settings.control_scale
    kwargs.update(settings.extra)
    generated = pipe(**kwargs).images[0]
    h, w = int(control.shape[-2]), int(control.shape[-1])

    _save_png(out / f"{item.name}.png", generated)
    save_control_image(out / f"{item.name}_depth.png", control[0, 0], format="control_png16",
                       metadata={"model": result.model_name, "kind": result.kind, "normalize": settings.normalize,
                                 "invert": settings.invert, "gamma": settings.gamma})
    from . import __version__

    meta = {
        "name": item.name,
        "image": str(item.image),
        "prompt": prompt,
        "negative": negative,
        "seed": seed,
        "steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "controlnet_conditioning_scale": settings.control_scale if uses_control_scale else None,
        "width": w,
        "height": h,
        "pipeline": pipeline_name,
        "pipeline_class": type(pipe).__name__,
        "controlnet": controlnet_name,
        "depth_model": result.model_name,
        "depth_kind": result.kind,
        "normalization": {"mode": settings.normalize, "invert": settings.invert, "gamma": settings.gamma,
                          "fit": settings.fit, "near": "white"},
        "outputs": {"image": f"{item.name}.png", "control": f"{item.name}_depth.png"},
        "seconds": round(time.perf_counter() - start, 3),
        "anydepth": __version__,
    }
    _save_json(meta_path, meta)
    return "done"
