"""Start-up time of the command line: ``carecrm --help`` and a coordinator's look-up.

Run from the repository root::

    python benchmarks/cli_startup.py [--repeat 7]

Every figure is the wall-clock time of a whole process, started the way a user starts
``carecrm`` (``python -m carecrm.cli ...``), measured beside ``python -c pass`` in the
same run (the baseline: the interpreter's own start-up on this machine, now).  The
commands run round-robin, ``--repeat`` times each, after one untimed warm-up run each;
the median and the min–max are printed, with the ratio of the medians to the baseline.

Commands measured:

* ``import carecrm.cli.main`` — importing the command line alone;
* ``carecrm --help``, ``carecrm contacts --help``, ``carecrm contacts find --help`` — the
  start-up of the command line and of the look-up command (their target: under 0.3 s);
* ``carecrm contacts find --phone ...`` and ``carecrm timeline ...`` against a small
  SQLite practice built first in a temporary folder (a few contacts, notes and a task):
  the whole look-up, config, keys, database and audit entry included.

Child processes run with bytecode caching on (``PYTHONDONTWRITEBYTECODE`` is removed from
their environment, as for an installed carecrm, whose ``.pyc`` files exist); plugins load
as the environment says (``CARECRM_LOAD_PLUGINS``; unset: every installed entry point).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common

#: The absolute start-up target of the issue (seconds), for --help and a look-up's start.
TARGET_SECONDS = 0.3

#: The practice's people: (first name, last name, phone, email).  Synthetic, never printed.
PEOPLE: tuple[tuple[str, str, str, str], ...] = (
    ("Maria", "Placeholder", "(312) 555-0142", "maria.placeholder@example.com"),
    ("Ana", "Example", "312-555-0143", "ana.example@example.com"),
    ("Carlos", "Sample", "+1 312 555 0144", "carlos.sample@example.com"),
    ("Jane", "Doe", "312.555.0145", "jane.doe@example.com"),
)

LOOKUP_PHONE = "(312) 555-0142"


def _env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["CARECRM_CONFIG"] = str(config)
    env.setdefault("NO_COLOR", "1")
    return env


def _run(argv: Sequence[str], env: Mapping[str, str]) -> float:
    """Wall-clock seconds of one process; raises if it fails."""
    started = time.perf_counter()
    done = subprocess.run(list(argv), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "carecrm.cli", *args]


def build_practice(folder: Path) -> Path:
    """A small SQLite practice in ``folder`` made with the command line itself: ``init``,
    then the :data:`PEOPLE` (each with a note) and a task.  :returns: its config path."""
    config = folder / "carecrm.toml"
    env = _env(config)
    _run(_cli("init", "--dir", str(folder), "--timezone", "America/Chicago", "--practice-name", "Bench"), env)
    for first, last, phone, email in PEOPLE:
        person = ("--first-name", first, "--last-name", last, "--phone", phone, "--email", email)
        _run(_cli("contacts", "add", *person), env)
        _run(_cli("note", "add", email, "Asked about a consult; prefers a call after 5pm."), env)
    _run(_cli("task", "add", PEOPLE[0][3], "Send the new-patient forms", "--due", "+2d"), env)
    return config


def commands() -> list[tuple[str, list[str], bool]]:
    """``(label, argv, has the 0.3 s target)`` of every measured process, baseline first."""
    return [
        ("python -c pass", [sys.executable, "-c", "pass"], False),
        ("import carecrm.cli.main", [sys.executable, "-c", "import carecrm.cli.main"], False),
        ("carecrm --help", _cli("--help"), True),
        ("carecrm contacts --help", _cli("contacts", "--help"), True),
        ("carecrm contacts find --help", _cli("contacts", "find", "--help"), True),
        ("carecrm contacts find --phone", _cli("contacts", "find", "--phone", LOOKUP_PHONE), False),
        ("carecrm timeline PHONE", _cli("timeline", LOOKUP_PHONE), False),
    ]


def measure(env: Mapping[str, str], repeat: int) -> dict[str, list[float]]:
    """Seconds of each command's runs: one untimed warm-up each, then ``repeat``
    round-robin rounds (so a burst of load on a shared machine hits every command)."""
    todo = commands()
    for _, argv, _ in todo:
        _run(argv, env)
    times: dict[str, list[float]] = {label: [] for label, _, _ in todo}
    for _ in range(repeat):
        for label, argv, _ in todo:
            times[label].append(_run(argv, env))
    return times


def report(times: Mapping[str, list[float]]) -> None:
    """Print each command's median [min-max] seconds, its ratio to ``python -c pass`` and,
    for the start-up commands, whether the median is under :data:`TARGET_SECONDS`."""
    base = statistics.median(times["python -c pass"])
    width = max(len(label) for label in times)
    for label, _, _ in commands():
        runs = times[label]
        med = statistics.median(runs)
        line = f"{label:<{width}} : {common.fmt_runs(runs, 3)} s  ratio to python -c pass: {med / base:.1f}"
        print(line)
    for label, _, targeted in commands():
        if targeted:
            med = statistics.median(times[label])
            verdict = "MET" if med < TARGET_SECONDS else "NOT MET"
            print(f"target: {label} < {TARGET_SECONDS} s: {verdict} (median {med:.3f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (0)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=7, metavar="N", help="timed runs per command (default 7)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="build the practice in DIR and keep it")
    args = parser.parse_args(argv)
    common.print_environment("CLI start-up", "benchmarks/cli_startup.py", list(argv or sys.argv[1:]))
    plugins = os.environ.get("CARECRM_LOAD_PLUGINS")
    print(
        "plugins: "
        + ("every installed entry point" if plugins is None else f"CARECRM_LOAD_PLUGINS={plugins!r}")
        + "; bytecode caching on in the child processes"
    )
    with tempfile.TemporaryDirectory(prefix="carecrm-cli-bench-") as tmp:
        folder = args.keep or Path(tmp) / "practice"
        config = build_practice(folder)
        print(f"practice: SQLite, {len(PEOPLE)} contacts with a note each, 1 task; runs per command: {args.repeat}")
        times = measure(_env(config), args.repeat)
    report(times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
