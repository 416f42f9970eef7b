"""The README and docs/ stay true: links resolve, the catalogue and the layout match the repository, and the README's
test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from anydepth.catalog import VARIANTS

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def prose(path: Path) -> str:
    """The page without its code blocks (a link-like text in code is not a link)."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.

    Example:
        >>> slug("Export: depth files with their meaning")
        'export-depth-files-with-their-meaning'
        >>> slug("`anydepth generate`: depth-conditioned generation in bulk")
        'anydepth-generate-depth-conditioned-generation-in-bulk'
    """
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: dict[str, int] = {}
    out = set()
    for line in prose(path).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            base = slug(m.group(1))
            n = found.get(base, 0)
            found[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    bad = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked here
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


def test_slug_and_link_check_catch_what_they_should(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n## Memory: shared with ComfyUI\n## Memory: shared with ComfyUI\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#memory-shared-with-comfyui) [dup](docs/a.md#memory-shared-with-comfyui-1) "
                    "[gone](docs/b.md) [anchor](docs/a.md#nothing) [web](https://example.org/x)\n"
                    "```\n[in code](nowhere.md)\n```\n")
    assert sorted(broken_links(page)) == ["docs/a.md#nothing: no heading #nothing in a.md",
                                          f"docs/b.md: no file {tmp_path / 'docs' / 'b.md'}"]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_points_to_an_existing_file(page):
    if page.parent.name == "docs":  # a reader who lands on a reference page finds the way back
        assert "](../README.md" in prose(page), f"{page.name} does not link back to the README"
    assert broken_links(page) == []


def test_readme_links_every_reference_page():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in LINK.findall(prose(REPO / "README.md"))}
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert missing == [], f"docs pages the README does not link: {missing}"


def test_readme_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (REPO / "README.md").read_text()
    assert ci.startswith("pip install -e") and "python -m pytest" in ci
    assert f"\n{ci}\n" in readme
    assert "\npip install . && anydepth estimate photo.jpg --out depth/\n" in readme


def test_every_catalogue_model_is_documented():
    text = (REPO / "docs" / "models.md").read_text() + (REPO / "docs" / "depth-anything-3.md").read_text()
    assert [name for name in VARIANTS if f"`{name}`" not in text] == []


def test_every_path_in_the_layout_exists():
    page = (REPO / "docs" / "development.md").read_text()
    block = page.split("## Repository layout", 1)[1].split("```")[1]
    paths = [line.split()[0] for line in block.splitlines() if line.strip()]
    assert len(paths) > 20
    assert [p for p in paths if not (REPO / p).exists()] == []
