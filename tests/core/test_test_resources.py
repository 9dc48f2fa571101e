"""Missing test resources are counted in the run's summary (carecrm.core.testing.resources
and the pytest plugin's ``pytest_terminal_summary``), and the corpus is found through one
helper that honours ``CARECRM_TEST_CORPUS``."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecrm.core.testing.resources import CORPUS_ENV, corpus_dir, missing_corpus, skip_summary

pytest_plugins = ["pytester"]

#: The reasons the repository's own fixtures give, as they word them.
MONGO_REASON = (
    "real_mongo: CARECRM_TEST_MONGODB_URI is not set, so this test against a real MongoDB server "
    "did not run (mongomock has no sessions or transactions)"
)
SERVER_REASONS = {
    "PostgreSQL": [
        "PostgreSQL not reachable: OperationalError",  # tests/conftest.py
        "postgresql test server not reachable (OperationalError: refused); start it or set "
        "CARECRM_TEST_POSTGRES_URL",  # tests/storage_backends/conftest.py
        "postgresql server not reachable: OperationalError",  # tests/use_cases/test_privacy.py
    ],
    "MariaDB": [
        "MariaDB not reachable: OperationalError",
        "mariadb test server not reachable (OperationalError: refused); start it or set CARECRM_TEST_MARIADB_URL",
        "mariadb server not reachable: OperationalError",
    ],
}


def test_corpus_dir_is_beside_the_clone_unless_the_variable_names_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CORPUS_ENV, raising=False)
    assert corpus_dir(tmp_path / "carecrm") == tmp_path / "shared" / "corpus"
    monkeypatch.setenv(CORPUS_ENV, str(tmp_path / "elsewhere"))
    assert corpus_dir(tmp_path / "carecrm") == tmp_path / "elsewhere"
    monkeypatch.setenv(CORPUS_ENV, "  ")
    assert corpus_dir(tmp_path / "carecrm") == tmp_path / "shared" / "corpus"


def test_missing_corpus_names_the_folder_or_the_missing_file(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    assert missing_corpus(corpus) == f"corpus missing: {corpus} not found; set {CORPUS_ENV} to the corpus folder"
    (corpus / "typeform").mkdir(parents=True)
    (corpus / "typeform" / "a.json").write_text("{}")
    assert missing_corpus(corpus) is None
    assert missing_corpus(corpus, corpus / "typeform" / "a.json") is None
    reason = missing_corpus(corpus, corpus / "typeform" / "a.json", corpus / "webflow" / "b.json")
    assert reason == f"corpus missing: {corpus} has no webflow/b.json; the corpus is incomplete"


def test_skip_summary_counts_each_resource_once_per_test(tmp_path: Path) -> None:
    absent, partial = tmp_path / "no corpus here", tmp_path / "partial"
    partial.mkdir()
    reasons = [
        missing_corpus(absent) or "",
        missing_corpus(absent) or "",
        missing_corpus(partial, partial / "sendgrid" / "x.json") or "",
        MONGO_REASON,
        *SERVER_REASONS["PostgreSQL"],
        *SERVER_REASONS["MariaDB"][:2],
        "payload file not available: /x/contract/a.json",
        "this backend's units of work cannot run in two threads at once",
    ]
    assert skip_summary(reasons) == [
        f"2 tests skipped: the vendor corpus was not found at {absent} (set {CORPUS_ENV} to its folder, "
        "or clone the repository beside shared/corpus)",
        f"1 test skipped: the vendor corpus at {partial} lacks files they read",
        "1 test skipped: a real MongoDB server is not available (set CARECRM_TEST_MONGODB_URI, "
        "e.g. mongodb://127.0.0.1:27017; the backend's suite ran on mongomock)",
        "3 tests skipped: the PostgreSQL test server is not available "
        "(start it on 127.0.0.1:5432 or set CARECRM_TEST_POSTGRES_URL)",
        "2 tests skipped: the MariaDB test server is not available "
        "(start it on 127.0.0.1:3306 or set CARECRM_TEST_MARIADB_URL)",
        "1 test skipped: a payload of a connector contract case is not available (pytest -rs names each file)",
    ]
    assert skip_summary(["no reopen_backend fixture: the open-time schema check is not tested"]) == []


def test_the_run_summary_says_how_many_tests_skipped_for_want_of_each_resource(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    absent = tmp_path / "nowhere" / "corpus"
    pytester.makepyfile(
        test_tiny=f"""
        import pytest
        from pathlib import Path
        from carecrm.core.testing.resources import needs_corpus, skip_without_corpus

        CORPUS = Path({str(absent)!r})

        @needs_corpus(CORPUS, CORPUS / "typeform" / "x.json")
        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_reads_the_corpus(n):
            assert (CORPUS / "typeform" / "x.json").read_bytes()

        @pytest.fixture
        def corpus():
            skip_without_corpus(CORPUS)
            return CORPUS

        def test_through_a_fixture(corpus):
            assert corpus.is_dir()

        def test_needs_mongo():
            pytest.skip({MONGO_REASON!r})

        def test_needs_postgres():
            pytest.skip("PostgreSQL not reachable: OperationalError")

        def test_skipped_for_another_reason():
            pytest.skip("not today")

        def test_runs():
            assert 1 + 1 == 2
        """
    )
    pytester.makepyfile(
        test_whole_module=f"""
        import pytest
        from pathlib import Path
        from carecrm.core.testing.resources import missing_corpus

        pytest.skip(missing_corpus(Path({str(absent)!r})), allow_module_level=True)
        """
    )
    result = pytester.runpytest("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=1, skipped=8)
    result.stdout.fnmatch_lines(
        [
            f"carecrm: 5 tests skipped: the vendor corpus was not found at {absent} (set {CORPUS_ENV} *",
            "carecrm: 1 test skipped: a real MongoDB server is not available (set CARECRM_TEST_MONGODB_URI*",
            "carecrm: 1 test skipped: the PostgreSQL test server is not available*",
        ]
    )
    assert "not today" not in result.stdout.str()
    assert result.stdout.str().count("carecrm: ") == 3


def test_a_run_without_such_skips_prints_no_carecrm_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_tiny="def test_runs():\n    assert [1][0] == 1\n")
    result = pytester.runpytest("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert "carecrm:" not in result.stdout.str()


def test_the_repository_finds_its_corpus_through_the_helper() -> None:
    """Every test module that reads the corpus takes its folder from corpus_dir (no second
    rule for where the corpus is)."""
    tests = Path(__file__).resolve().parents[1]
    for path in tests.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name == Path(__file__).name:
            continue
        assert '"shared" / "corpus"' not in text, f"{path}: find the corpus with corpus_dir()"
        assert "CARECRM_TEST_CORPUS" not in text.replace("``$CARECRM_TEST_CORPUS``", ""), path
