"""What the command line imports to start (issue 7, item 12): ``--help`` and a look-up load
only what they use, and the lazy public surface of ``carecrm.core`` still works.

Each check runs a fresh interpreter (``python -c``), since the test process has imported
everything already.  Nothing here measures time (``benchmarks/cli_startup.py`` does).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import carecrm.core
from carecrm.cli.main import BUILTIN_COMMANDS, cli, load_command
from carecrm.core.plugins.manager import COMMAND_PLUGINS, DEFAULT_PLUGINS

#: Modules a start-up must not import: the app and the rest of the core, storage drivers,
#: migrations, rendering and the built-in source, model and backend plugins.
HEAVY = (
    "carecrm.core.app",
    "carecrm.core.ingest",
    "carecrm.storage_backends.sql",
    "carecrm.storage_backends.mongo",
    "carecrm.plugins.sources.mapped",
    "sqlalchemy",
    "alembic",
    "pymongo",
    "rich",
    "phonenumbers",
    "email_validator",
    "cattrs",
)

PROBE = """
import json, sys
from carecrm.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def loaded_by(*args: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh ``carecrm ARGS`` has imported when it ends (it must succeed)."""
    full_env = {**os.environ, "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1", **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=full_env, check=False
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["exit"] in (0, None), done.stderr
    return set(report["modules"])


@pytest.mark.parametrize("args", [["--help"], ["contacts", "--help"], ["contacts", "find", "--help"]])
def test_help_imports_no_core_app_driver_nor_plugin(args: list[str], tmp_path: Path) -> None:
    modules = loaded_by(*args, env={"CARECRM_CONFIG": str(tmp_path / "absent.toml")})
    assert "carecrm.cli.main" in modules
    assert not [m for m in HEAVY if m in modules]
    # only the command looked up is imported (the root's --help lists them all)
    if args[0] == "contacts":
        assert "carecrm.cli.commands.segments" not in modules and "carecrm.cli.commands.ingest" not in modules


def test_a_phone_look_up_imports_no_migrations_mongo_nor_email_validation(tmp_path: Path) -> None:
    root = tmp_path / "practice"
    env = {"CARECRM_LOAD_PLUGINS": ""}
    assert CliRunner().invoke(cli, ["init", "--dir", str(root)], env=env).exit_code == 0
    config = {"CARECRM_CONFIG": str(root / "carecrm.toml")}
    assert CliRunner().invoke(cli, ["contacts", "add", "--phone", "3125550142"], env={**env, **config}).exit_code == 0
    modules = loaded_by("contacts", "find", "--phone", "(312) 555-0142", env=config)
    assert "carecrm.core.app" in modules and "sqlalchemy" in modules  # it did look
    for unneeded in ("alembic", "pymongo", "email_validator", "carecrm.cli.commands.segments"):
        assert unneeded not in modules


def test_every_built_in_command_loads_under_its_name() -> None:
    for name, path in BUILTIN_COMMANDS.items():
        assert load_command(path).name == name


def test_command_plugins_are_the_built_in_plugins_that_add_commands() -> None:
    adds_commands = {m for m in DEFAULT_PLUGINS if hasattr(importlib.import_module(m), "carecrm_register_commands")}
    assert adds_commands == set(COMMAND_PLUGINS)


def test_the_public_core_surface_still_imports() -> None:
    for name in carecrm.core.__all__:
        assert getattr(carecrm.core, name) is not None
    assert set(carecrm.core.__all__) <= set(dir(carecrm.core))
    from carecrm.core import CareCRM, hookimpl

    assert CareCRM.__name__ == "CareCRM" and callable(hookimpl)
    with pytest.raises(AttributeError):
        carecrm.core.NoSuchName  # noqa: B018
