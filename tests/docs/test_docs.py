"""The plugin tutorial's code runs as written (docs/writing_plugins.md), and the docs' relative
links resolve inside the repository."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_writing_plugins_tutorial_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "docs" / "writing_plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    module_src = next(b for b in blocks if "class ChatbotConnector" in b)
    tests_src = next(b for b in blocks if "def test_through_the_core" in b)
    module = types.ModuleType("carecrm_chatbot")
    exec(compile(module_src, "carecrm_chatbot", "exec"), module.__dict__)  # noqa: S102
    monkeypatch.setitem(sys.modules, "carecrm_chatbot", module)
    namespace: dict[str, object] = {}
    exec(compile(tests_src, "tutorial_tests", "exec"), namespace)  # noqa: S102
    namespace["test_parse"]()  # type: ignore[operator]
    namespace["test_through_the_core"](tmp_path)  # type: ignore[operator]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings (lowercased, punctuation dropped,
    spaces as hyphens)."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_relative_links_of_the_docs_resolve_inside_the_repository() -> None:
    """Every relative link of README.md and docs/ names a file of the repository (and a
    heading of it, for an anchor): nothing points outside the clone."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    checked = 0
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.is_relative_to(REPO), f"{page.name}: {target} points outside the repository"
            assert resolved.exists(), f"{page.name}: {target} does not exist"
            if anchor and resolved.suffix == ".md":
                assert anchor in _anchors(resolved), f"{page.name}: {target}: no such heading"
            checked += 1
    assert checked > 20
