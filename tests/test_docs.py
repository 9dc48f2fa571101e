"""The plugin tutorial's code runs as written (docs/writing_plugins.md)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
