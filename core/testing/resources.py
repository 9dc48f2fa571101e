"""Test resources that may be missing, and how a test run says so.

Some of carecrm's tests need things that are not in the repository: the vendor corpus
(published webhook payloads of Typeform, SendGrid, CallRail, ...), a real MongoDB
server, a PostgreSQL or MariaDB server.  Without them those tests skip; this module
makes the skip visible:

* :func:`corpus_dir` is the one place that says where the corpus is:
  ``$CARECRM_TEST_CORPUS`` when set, else ``shared/corpus`` beside the repository clone
  (``<clone>/../shared/corpus``, as in CI).
* :func:`needs_corpus` is the skip mark of a test that reads corpus files; its reason
  starts with :data:`CORPUS_MISSING` and names the folder.
* :func:`skip_summary` groups the reasons of skipped tests into one line per missing
  resource; carecrm's pytest plugin prints those lines at the end of the run
  (``pytest_terminal_summary``), so a fresh clone's run says how many tests did not run
  and why.

Skip reasons are text; nothing here reads personal data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import attrs
import pytest

#: The environment variable naming the corpus folder (kept by the tests' environment
#: isolation, like every ``CARECRM_TEST_*`` variable).
CORPUS_ENV = "CARECRM_TEST_CORPUS"

#: How every corpus skip reason begins: ``corpus missing: <folder> ...``.
CORPUS_MISSING = "corpus missing"

_CORPUS_REASON = re.compile(re.escape(CORPUS_MISSING) + r": (?P<where>.+?) (?P<what>not found|has no )")


def corpus_dir(repo: Path) -> Path:
    """Where the vendor corpus is for the clone at ``repo``.

    :param repo: the repository's root folder (the folder holding ``pyproject.toml``).
    :returns: ``$CARECRM_TEST_CORPUS`` when set and not empty, else
        ``repo.parent / "shared" / "corpus"``; the folder may not exist.
    """
    named = os.environ.get(CORPUS_ENV, "").strip()
    return Path(named) if named else repo.parent / "shared" / "corpus"


def corpus_skip_reason(corpus: Path, missing: Path | None = None) -> str:
    """The reason of a test skipped for want of the corpus (or of one file in it).

    :param corpus: the corpus folder looked for.
    :param missing: the file that is missing, when the folder exists but lacks it.
    :returns: text beginning with :data:`CORPUS_MISSING` and the folder.
    """
    if missing is None:
        return f"{CORPUS_MISSING}: {corpus} not found; set {CORPUS_ENV} to the corpus folder"
    return f"{CORPUS_MISSING}: {corpus} has no {missing.relative_to(corpus)}; the corpus is incomplete"


def missing_corpus(corpus: Path, *files: Path) -> str | None:
    """Why tests that read ``files`` of the corpus cannot run, or None when they can.

    :param corpus: the corpus folder (from :func:`corpus_dir`).
    :param files: files inside ``corpus`` the tests read; with none, the folder itself
        must exist.
    :returns: a :func:`corpus_skip_reason` for the folder or the first missing file.
    """
    if not corpus.is_dir():
        return corpus_skip_reason(corpus)
    absent = [f for f in files if not f.is_file()]
    return corpus_skip_reason(corpus, absent[0]) if absent else None


def needs_corpus(corpus: Path, *files: Path) -> pytest.MarkDecorator:
    """A ``skipif`` mark for tests that read the corpus (decorate a test or set
    ``pytestmark``).

    :param corpus: the corpus folder (from :func:`corpus_dir`).
    :param files: files inside ``corpus`` the tests read; with none, the folder must exist.
    :returns: a mark that skips, with the reason of :func:`missing_corpus`, when the
        folder or any of ``files`` is missing.
    """
    reason = missing_corpus(corpus, *files)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def skip_without_corpus(corpus: Path, *files: Path) -> None:
    """Skip the running test (or fixture) when the corpus or one of ``files`` is missing.

    :raises pytest.skip.Exception: with the reason of :func:`missing_corpus`.
    """
    reason = missing_corpus(corpus, *files)
    if reason is not None:
        pytest.skip(reason)


@attrs.frozen
class MissingResource:
    """A resource whose absence skips tests.

    :ivar label: what is missing, as the summary says it (``a real MongoDB server``).
    :ivar pattern: a regular expression that a skip reason for it matches (searched,
        case-insensitive).
    :ivar remedy: how to provide it (``set CARECRM_TEST_MONGODB_URI``).
    """

    label: str
    pattern: str
    remedy: str

    def matches(self, reason: str) -> bool:
        """True when ``reason`` (a skip reason) is a skip for want of this resource."""
        return re.search(self.pattern, reason, re.IGNORECASE) is not None


#: The resources carecrm's tests (and tests built on the shipped kits) may lack, besides
#: the corpus, in the order the summary lists them.
SERVERS: tuple[MissingResource, ...] = (
    MissingResource(
        "a real MongoDB server",
        r"CARECRM_TEST_MONGODB_URI",
        "set CARECRM_TEST_MONGODB_URI, e.g. mongodb://127.0.0.1:27017; the backend's suite ran on mongomock",
    ),
    MissingResource(
        "the PostgreSQL test server",
        r"postgres\w*( test)?( server)? not reachable",
        "start it on 127.0.0.1:5432 or set CARECRM_TEST_POSTGRES_URL",
    ),
    MissingResource(
        "the MariaDB test server",
        r"(mariadb|mysql)( test)?( server)? not reachable",
        "start it on 127.0.0.1:3306 or set CARECRM_TEST_MARIADB_URL",
    ),
    MissingResource(
        "a payload of a connector contract case",  # carecrm.core.testing.sources.parametrize
        r"^payload file not available: ",
        "pytest -rs names each file",
    ),
)


def _plural(count: int) -> str:
    return f"{count} test{'' if count == 1 else 's'}"


def skip_summary(reasons: Iterable[str]) -> list[str]:
    """One line per missing resource, counting the skips it caused.

    :param reasons: the reasons of the run's skipped tests (one per test; reasons of
        other skips are ignored).
    :returns: lines such as ``60 tests skipped: the vendor corpus was not found at
        /x/shared/corpus (set CARECRM_TEST_CORPUS ...)``; empty when no skip was for want
        of a resource.  Corpus lines come first, one per folder looked for; then
        :data:`SERVERS` in order.
    """
    corpus: dict[tuple[str, str], int] = {}
    servers = [0] * len(SERVERS)
    for reason in reasons:
        found = _CORPUS_REASON.search(reason)
        if found:
            key = (found["where"], found["what"].strip())
            corpus[key] = corpus.get(key, 0) + 1
            continue
        for i, server in enumerate(SERVERS):
            if server.matches(reason):
                servers[i] += 1
                break
    lines = [
        f"{_plural(count)} skipped: the vendor corpus was not found at {where} (set {CORPUS_ENV} to its "
        "folder, or clone the repository beside shared/corpus)"
        if what == "not found"
        else f"{_plural(count)} skipped: the vendor corpus at {where} lacks files they read"
        for (where, what), count in corpus.items()
    ]
    lines += [
        f"{_plural(count)} skipped: {server.label} is not available ({server.remedy})"
        for server, count in zip(SERVERS, servers, strict=True)
        if count
    ]
    return lines
