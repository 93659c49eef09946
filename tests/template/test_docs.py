"""The documentation's links: every relative link in README.md and docs/
names a file that exists and, with an anchor, a heading of that file (as
GitHub makes anchors), so moving or renaming a page or a section cannot
leave a link behind."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: pathlib.Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in without_code(path.read_text()).splitlines():
        m = re.match(r"^#{1,6} (.*)", line)
        if m:
            heading = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(heading.replace(" ", "-"))
    return out


def links(path: pathlib.Path):
    for target in LINK.findall(without_code(path.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        yield target


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    for target in links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        assert dest.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.relative_to(ROOT)} links to {target}: no such heading"


def test_every_docs_page_is_in_the_readmes_table_of_contents():
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"docs/{page.name} is not linked from the README"


def test_the_readme_is_a_page_and_a_half():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
