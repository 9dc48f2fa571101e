"""The core laid out by capability (issue 7, item 1): old module paths are one-release aliases."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from carecrm.core._aliases import MODULE_ALIASES

CORE = Path(__file__).resolve().parents[2] / "core"


@pytest.mark.parametrize("old", sorted(MODULE_ALIASES))
def test_an_old_module_path_is_the_new_module_with_a_warning(old: str) -> None:
    new = importlib.import_module(MODULE_ALIASES[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=MODULE_ALIASES[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is new


def test_old_names_of_modules_that_became_packages_still_resolve() -> None:
    from carecrm.core.events.types import ContactCreated
    from carecrm.core.plugins.manager import build_plugin_manager
    from carecrm.core.storage.contract import UnitOfWork

    with pytest.warns(DeprecationWarning, match="storage.contract"):
        from carecrm.core.storage import UnitOfWork as old_uow
    with pytest.warns(DeprecationWarning, match="events.types"):
        from carecrm.core import events

        assert events.ContactCreated is ContactCreated
    with pytest.warns(DeprecationWarning, match="plugins.manager"):
        from carecrm.core.plugins import build_plugin_manager as old_build
    assert old_uow is UnitOfWork and old_build is build_plugin_manager


def test_a_plugin_written_against_the_old_paths_imports_in_a_fresh_interpreter() -> None:
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "try:\n"
        "    from carecrm.core.connectors import SourceConnector\n"
        "except DeprecationWarning as w:\n"
        "    print(w)\n"
        "warnings.simplefilter('ignore')\n"
        "from carecrm.core.connectors import SourceConnector\n"
        "from carecrm.core import SourceConnector as public\n"
        "from carecrm.core import connector_kit as kit\n"
        "assert SourceConnector is public and kit.canonical_json\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "carecrm.core.ingest.connectors" in out


def test_the_top_of_the_core_holds_only_the_facade_config_and_errors() -> None:
    flat = sorted(p.name for p in CORE.glob("*.py") if not p.name.startswith("_"))
    assert flat == ["app.py", "config.py", "delegation.py", "errors.py"]
    for package in CORE.iterdir():
        if package.is_dir() and not package.name.startswith("_"):
            assert (package / "__init__.py").exists(), package
            assert len(list(package.iterdir())) <= 20, package


def test_a_submodule_is_imported_from_its_package_without_a_warning() -> None:
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "from carecrm.core.plugins import hookspecs\n"
        "from carecrm.core.storage import capabilities\n"
        "from carecrm.core.events import outbox\n"
        "print(hookspecs.__name__, capabilities.__name__, outbox.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [
        "carecrm.core.plugins.hookspecs",
        "carecrm.core.storage.capabilities",
        "carecrm.core.events.outbox",
    ]
