"""The wheel holds every module, and nothing imports the bare folder names."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {
    "core": "carecrm/core",
    "plugins": "carecrm/plugins",
    "storage_backends": "carecrm/storage_backends",
    "cli": "carecrm/cli",
}


@pytest.mark.slow
def test_wheel_contains_every_module(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("carecrm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, target in FOLDERS.items():
        for path in (REPO / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in (".py", ".typed", ".mako", ".toml"):
                expected.add(f"{target}/{path.relative_to(REPO / folder).as_posix()}")
    missing = sorted(expected - names)
    assert not missing, f"missing from the wheel: {missing}"
    assert not any(n.startswith(("core/", "cli/", "plugins/", "storage_backends/")) for n in names)


def test_no_bare_folder_module_is_imported() -> None:
    for top in ("carecrm.core", "carecrm.plugins", "carecrm.storage_backends", "carecrm.cli"):
        pkg = importlib.import_module(top)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=top + "."):
            if ".migrations.versions." in info.name or info.name.endswith(".migrations.env"):
                continue  # alembic loads these itself
            importlib.import_module(info.name)
    bare = [m for m in ("core", "cli", "plugins", "storage_backends") if m in sys.modules]
    assert bare == [], f"bare top-level modules imported: {bare}"
