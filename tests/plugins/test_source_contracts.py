"""SendGrid, CallRail and a mapped source (Typeform, with the shipped example mapping) run
through the connector contract kit (``carecrm.core.testing.sources``): each case is a
payload with an ``.expected.json`` beside it.

``contract/samples/<vendor>/`` holds small payloads made for these tests (they always run);
``contract/corpus/<vendor>/`` holds expectations about the shared connector corpus's real
payloads (``$CARECRM_TEST_CORPUS``, else ``../shared/corpus`` beside the clone), skipped
with the corpus's reason when it is not there (the run's summary counts them).  The
expected values come from the corpus notes (``*.expected.md``) and the vendors'
documentation.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carecrm.core.config import Settings
from carecrm.core.ingest.connectors import SourceConnector
from carecrm.core.testing import resources
from carecrm.core.testing.sources import Case, check_case, parametrize
from carecrm.plugins.sources.callrail import CallRailConnector
from carecrm.plugins.sources.mapped import MappedConnector
from carecrm.plugins.sources.sendgrid import SendGridConnector

HERE = Path(__file__).parent / "contract"
REPO = Path(__file__).resolve().parents[2]
CORPUS = resources.corpus_dir(REPO)
needs_corpus = resources.needs_corpus(CORPUS)


def typeform() -> MappedConnector:
    with (REPO / "plugins" / "sources" / "examples" / "typeform.toml").open("rb") as fh:
        table: dict[str, Any] = tomllib.load(fh)["sources"]["typeform"]
    options = {k: v for k, v in table.items() if k not in ("connector", "secret")}
    return MappedConnector(name="typeform", options=options, settings=Settings())


CONNECTORS: dict[str, Callable[[], SourceConnector]] = {
    "sendgrid": lambda: SendGridConnector(name="sendgrid", options={}, settings=Settings()),
    # legacy CallRail times have no zone: the company's (corpus note: America/New_York)
    "callrail": lambda: CallRailConnector(
        name="callrail", options={"time_zone": "America/New_York"}, settings=Settings()
    ),
    "typeform": typeform,
}


@pytest.mark.parametrize("vendor", sorted(CONNECTORS))
def test_every_vendor_has_sample_cases(vendor: str) -> None:
    assert sorted((HERE / "samples" / vendor).glob("*.expected.json")), f"no sample cases for {vendor}"


@parametrize(HERE / "samples" / "sendgrid")
def test_sendgrid_samples(case: Case) -> None:
    assert check_case(CONNECTORS["sendgrid"](), case) == []


@parametrize(HERE / "samples" / "callrail")
def test_callrail_samples(case: Case) -> None:
    assert check_case(CONNECTORS["callrail"](), case) == []


@parametrize(HERE / "samples" / "typeform")
def test_typeform_samples(case: Case) -> None:
    assert check_case(CONNECTORS["typeform"](), case) == []


@needs_corpus
@parametrize(HERE / "corpus" / "sendgrid", payloads=CORPUS / "sendgrid")
def test_sendgrid_corpus(case: Case) -> None:
    assert check_case(CONNECTORS["sendgrid"](), case) == []


@needs_corpus
@parametrize(HERE / "corpus" / "callrail", payloads=CORPUS / "callrail")
def test_callrail_corpus(case: Case) -> None:
    assert check_case(CONNECTORS["callrail"](), case) == []


@needs_corpus
@parametrize(HERE / "corpus" / "typeform", payloads=CORPUS / "typeform")
def test_typeform_corpus(case: Case) -> None:
    assert check_case(CONNECTORS["typeform"](), case) == []
