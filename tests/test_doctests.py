"""Every ``>>>`` example in the library's docstrings runs here, as written, and nothing may be skipped.

Each docstring is one test, run by :mod:`doctest` in a fresh temporary working folder that holds the
photos the examples name (``photo.jpg``, ``room.jpg``, ``a.jpg``, ``b.png``, ``b.jpg``, ``c.jpg``: 61×45
random pictures). A catalogue name in an example finds a tiny random model of that name in the test's
models folder (``v2-small``: the tiny ``.pth``; ``da3-small``: a tiny DA3 folder), and a diffusers hub id
is served by a local hub holding a tiny pipeline, so the examples are the published usage, not stand-ins.

The modules are imported as ``anydepth.*`` (the installed package), not through pytest's
``--doctest-modules``, which would import them a second time as ``<checkout folder>.anydepth.*``: the
repository root is itself a package (the ComfyUI entry point).
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import pkgutil
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest

import anydepth
from conftest import write_photo

PHOTOS = ("photo.jpg", "room.jpg", "a.jpg", "b.png", "b.jpg", "c.jpg")
#: Hub ids an example may load, served from the tiny pipelines (tests/tiny_diffusers.py) under that id.
HUB_PIPELINES = {"stable-diffusion-v1-5/stable-diffusion-v1-5": "sd15",
                 "lllyasviel/control_v11f1p_sd15_depth": "sd15-controlnet"}
FLAGS = doctest.ELLIPSIS


def _modules() -> list[ModuleType]:
    """anydepth and every module below it (``__main__`` modules run a command when imported: left out)."""
    names = [info.name for info in pkgutil.walk_packages(anydepth.__path__, "anydepth.")
             if not info.name.endswith("__main__")]
    return [anydepth, *(importlib.import_module(n) for n in sorted(names))]


def _docstrings() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    return sorted((t for m in _modules() for t in finder.find(m) if t.examples), key=lambda t: t.name)


DOCSTRINGS = _docstrings()


def _prompts(module: ModuleType) -> int:
    """``>>>`` prompts in a module's source file."""
    return len(re.findall(r"^\s*>>> ", Path(module.__file__).read_text(encoding="utf-8"), flags=re.M))


def test_every_example_in_the_sources_is_collected():
    """A ``>>>`` the finder misses (in a comment, a wrapped function, a plain string) would never run."""
    found: dict[str, int] = {}
    for t in DOCSTRINGS:
        found[t.filename] = found.get(t.filename, 0) + len(t.examples)
    written = {m.__file__: _prompts(m) for m in _modules() if _prompts(m)}
    assert found == written
    assert sum(written.values()) >= 40  # the library's examples are still there to test


def _install_models(text: str, request: pytest.FixtureRequest) -> None:
    """Put a tiny model under each catalogue name ``text`` uses, where the catalogue looks for it."""
    from anydepth.catalog import VARIANTS
    from anydepth.weights import default_models_dir

    models = default_models_dir()  # this test's own empty folder (conftest)
    if '"v2-small"' in text:
        models.mkdir(parents=True, exist_ok=True)
        shutil.copy(request.getfixturevalue("tiny_files")["pth"], models / VARIANTS["v2-small"].local_name)
    if '"da3-small"' in text:
        pytest.importorskip("depth_anything_3", reason="the tiny DA3 file is written by the official package: "
                                                       "pip install --no-deps depth-anything-3==0.1.1")
        from tiny_da3 import TINY_FILE, official_tiny, save_official

        save_official(official_tiny(TINY_FILE, seed=3), models / VARIANTS["da3-small"].local_name)


def _serve_pipelines(text: str, stack: contextlib.ExitStack, request: pytest.FixtureRequest, monkeypatch,
                     tmp_path: Path) -> None:
    """Serve the tiny pipeline under each hub id ``text`` names, from a local hub that ``stack`` stops."""
    ids = [i for i in HUB_PIPELINES if f'"{i}"' in text]
    if not ids:
        return
    from hub_server import LocalHub, hub_env

    built = request.getfixturevalue("tiny_pipelines")
    repos = {i: {p.relative_to(built[HUB_PIPELINES[i]]).as_posix(): p
                 for p in built[HUB_PIPELINES[i]].rglob("*") if p.is_file()} for i in ids}
    hub_env(monkeypatch, stack.enter_context(LocalHub(repos)), tmp_path / "hf-home")


@pytest.mark.parametrize("found", DOCSTRINGS, ids=[t.name for t in DOCSTRINGS])
def test_docstring_examples(found: doctest.DocTest, tmp_path, monkeypatch, request):
    text = found.docstring or ""
    test = doctest.DocTest(found.examples, dict(found.globs), found.name, found.filename, found.lineno, text)
    work = tmp_path / "work"
    for name in PHOTOS:
        write_photo(work / name)
    monkeypatch.chdir(work)
    _install_models(text, request)
    report: list[str] = []
    with contextlib.ExitStack() as stack:
        _serve_pipelines(text, stack, request, monkeypatch, tmp_path)
        result = doctest.DocTestRunner(optionflags=FLAGS).run(test, out=report.append)
    assert result.failed == 0, "".join(report)
    assert result.attempted == len(test.examples), f"{test.name}: an example is skipped; make it run instead"
