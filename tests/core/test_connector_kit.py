"""The connector kit (``carecrm.core.ingest.kit``) and the ``Rejected`` value, through
their public API and through the app (the quarantine reason a Rejected record gets)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import json
import sys
from collections.abc import Callable, Iterable

import attrs
import pytest

from carecrm.core import (
    CareCRM,
    LeadEvent,
    RawPayload,
    Rejected,
    SourceConnector,
    ValidationFailed,
    hookimpl,
)
from carecrm.core.ingest import kit as kit
from carecrm.core.model.domain import Actor, InteractionDraft

ACTOR = Actor.parse("tester:admin")


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("value", "expected"),
    [(" Ann ", "Ann"), ("", None), ("   ", None), (42, "42"), (True, None), (1.5, None), (None, None), ([1], None)],
)
def test_text_is_lenient(value: object, expected: str | None) -> None:
    assert kit.text(value) == expected


def test_single_text_is_strict_and_never_repeats_the_value() -> None:
    assert kit.single_text([" Ann "]) == " Ann "  # as sent, one-element list unwrapped
    assert kit.single_text(7.0) == "7"
    assert kit.single_text([]) is None and kit.single_text(" ") is None
    for bad in (["Ann", "Bo"], True, 7.5, {"name": "Ann"}):
        with pytest.raises(kit.BadValue) as info:
            kit.single_text(bad)
        assert "Ann" not in info.value.reason and "7.5" not in info.value.reason


def test_identifier_refuses_unstorable_ids() -> None:
    assert kit.identifier(" r-1 ") == "r-1"
    assert kit.identifier([12345678901234567890]) == "12345678901234567890"
    assert kit.identifier("") is None
    for bad in ("r\x00", "r\ud83d", 1.5, True):
        with pytest.raises(kit.BadValue):
            kit.identifier(bad)


def test_flag_reads_booleans_sent_as_text() -> None:
    assert [kit.flag(v) for v in (True, 0, 2, " TRUE ", "f", "maybe", None)] == [
        True,
        False,
        True,
        True,
        False,
        None,
        None,
    ]
    narrow = frozenset({"true"})
    assert kit.flag("y") is True and kit.flag("y", true_words=narrow) is None


# --------------------------------------------------------------------------- canonical JSON


def test_canonical_json_is_stable_and_takes_lone_surrogates() -> None:
    a = kit.canonical_json({"b": 1, "a": ["é", None]})
    assert a == '{"a":["é",null],"b":1}'.encode()
    assert kit.canonical_json({"a": ["é", None], "b": 1}) == a  # key order does not matter
    # the form of digests stored as idempotency keys: must never change
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b'{"a":["\xc3\xa9",null],"b":1}').hexdigest()
    poison = json.loads('{"last_name": "\\ud83d"}')
    assert kit.canonical_json(poison) == kit.canonical_json(poison)  # no error, one digest


# --------------------------------------------------------------------------- signatures


def test_signature_from_header_and_hmac() -> None:
    body = b'{"id": 1}'
    digest = kit.hmac_digest("s3cret", body, "sha256")
    assert digest == hmac.new(b"s3cret", body, hashlib.sha256).digest()
    good = RawPayload(body=body, headers={"X-Sig": "sha256=" + base64.b64encode(digest).decode()})
    given = kit.signature_from_header(good, source="test", header="x-sig", prefix="sha256=")
    assert kit.signatures_match(digest, given)
    assert not kit.signatures_match(kit.hmac_digest("other", body, "sha256"), given)
    hexed = RawPayload(body=body, headers={"X-Sig": digest.hex().upper()})
    assert kit.signature_from_header(hexed, source="test", header="X-Sig", encoding="hex") == digest

    cases = {
        "missing": ({}, "signature header is missing"),
        "blank": ({"X-Sig": "  "}, "signature header is missing"),
        "no prefix": ({"X-Sig": base64.b64encode(digest).decode()}, "lacks the expected prefix"),
        "not base64": ({"X-Sig": "sha256=***"}, "signature is not base64"),
    }
    for headers, reason in cases.values():
        with pytest.raises(ValidationFailed) as info:
            kit.signature_from_header(
                RawPayload(body=body, headers=headers), source="test", header="X-Sig", prefix="sha256="
            )
        assert (info.value.source, info.value.record, info.value.field) == ("test", "payload", "X-Sig")
        assert reason in info.value.reason


# --------------------------------------------------------------------------- URLs


def test_without_query_drops_query_fragment_and_user_info() -> None:
    assert kit.without_query("https://example.com/acne") == "https://example.com/acne"
    assert kit.without_query("https://Derm.Example.com/Acne") == "https://derm.example.com/Acne"
    assert kit.without_query("https://user:pw@Example.COM:8443/a?email=x%40y.com#top") == "https://example.com:8443/a"
    assert kit.without_query("https://[::1/a?email=x") == "https://[::1/a"  # unreadable: cut at '?'
    assert kit.without_query("/landing?utm_source=x") == "/landing"


def test_url_parameters() -> None:
    url = "https://example.com/?UTM_Source=google&utm_campaign=+spring-acne+&utm_medium=&gclid=abc&utm_source=bing"
    assert kit.url_parameters(url) == {"source": "google", "campaign": "spring-acne", "gclid": "abc"}
    assert kit.url_parameters("https://[::1/?utm_source=x") == {}


def test_the_old_urls_module_is_an_alias_with_a_warning() -> None:
    sys.modules.pop("carecrm.plugins.sources.urls", None)
    with pytest.warns(DeprecationWarning, match="ingest.kit"):
        urls = importlib.import_module("carecrm.plugins.sources.urls")
    assert urls.without_query is kit.without_query and urls.URL_PARAMETERS is kit.URL_PARAMETERS


# --------------------------------------------------------------------------- Rejected


def test_rejected_is_a_frozen_value() -> None:
    r = Rejected("#2", "email", "missing")
    assert r == Rejected(ref="#2", field="email", reason="missing")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        r.reason = "other"  # type: ignore[misc]
    for bad in (("", "email", "missing"), ("#2", None, "missing")):
        with pytest.raises(TypeError):
            Rejected(*bad)  # type: ignore[arg-type]


def _lead(ref: str, email: str) -> LeadEvent:
    from datetime import UTC, datetime

    return LeadEvent(
        source="rows",
        record_ref=ref,
        emails=(email,),
        interactions=(
            InteractionDraft(
                kind="form.submitted",
                channel="web",
                occurred_at=datetime(2026, 4, 2, 15, 0, tzinfo=UTC),
                idempotency_key=f"form.submitted:{ref}",
            ),
        ),
    )


def _rows_plugin(refusal: Callable[[str, str], object]) -> object:
    class Rows(SourceConnector):
        """One lead per line (an email); a line without ``@`` is refused."""

        connector_id = "rows"

        def parse(self, payload: RawPayload) -> Iterable[LeadEvent | Rejected]:
            for i, line in enumerate(payload.body.decode().splitlines()):
                ref = f"row-{i}"
                yield _lead(ref, line) if "@" in line else refusal(self.name, ref)  # type: ignore[misc]

    class Plugin:
        @hookimpl
        def carecrm_register_sources(self, register: Callable[..., None]) -> None:
            register(Rows)

    return Plugin()


BODY = b"ann.placeholder@example.com\nnot-an-email-Placeholder\nbo.placeholder@example.com\n"


def test_a_rejected_record_is_quarantined_naming_source_record_and_field(make_app: Callable[..., CareCRM]) -> None:
    base = make_app()
    plugin = _rows_plugin(lambda _source, ref: Rejected(ref, "email", "no @ in the line"))
    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[plugin])
    report = app.ingest_payloads("rows", [RawPayload(body=BODY, origin="leads.txt")], actor=ACTOR)
    assert report.contacts_created == 2 and report.records == 3
    (q,) = report.quarantined
    assert q.message() == "rows: payload leads.txt: record row-1 (#1 in the payload): field 'email': no @ in the line"
    (item,) = app.inbox_list(status="quarantined")
    assert "Placeholder" not in (item.reason or "")
    app.close()


def test_a_yielded_validation_failed_still_works_with_a_deprecation_warning(
    make_app: Callable[..., CareCRM],
) -> None:
    base = make_app()
    plugin = _rows_plugin(lambda source, ref: ValidationFailed(source, ref, "email", "no @ in the line"))
    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[plugin])
    with pytest.warns(DeprecationWarning, match="Rejected"):
        report = app.ingest_payloads("rows", [RawPayload(body=BODY, origin="leads.txt")], actor=ACTOR)
    assert report.contacts_created == 2
    (q,) = report.quarantined
    assert q.message() == "rows: payload leads.txt: record row-1 (#1 in the payload): field 'email': no @ in the line"
    app.close()


def test_require_fresh_refuses_a_timestamp_outside_the_window() -> None:
    from datetime import UTC, datetime

    from carecrm.core.errors import ValidationFailed
    from carecrm.core.ingest import kit
    from carecrm.core.model.domain import RawPayload

    received = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    payload = RawPayload(body=b"{}", received_at=received)
    now = received.timestamp()
    kit.require_fresh(now - 299, payload, source="webflow", field="x-webflow-timestamp")
    kit.require_fresh(now + 299, payload, source="webflow", field="x-webflow-timestamp")  # a clock a little ahead
    for signed_at in (now - 301, now + 301, float("nan")):
        with pytest.raises(ValidationFailed) as caught:
            kit.require_fresh(signed_at, payload, source="webflow", field="x-webflow-timestamp")
        assert caught.value.field == "x-webflow-timestamp" and "replay" in caught.value.reason
    kit.require_fresh(0, payload, source="webflow", field="t", max_age_seconds=None)  # turned off
    kit.require_fresh(now - 3000, payload, source="webflow", field="t", max_age_seconds=3600)


def test_practice_numbers_and_redacted_text() -> None:
    from carecrm.core.ingest import kit
    from carecrm.core.model.domain import Location, Practice

    practice = Practice(
        name="P",
        locations=(
            Location(
                name="downtown",
                timezone="America/Chicago",
                phones=("(312) 555-0100", "not a number"),
                tracking_numbers={"312-555-0111": "google_ads", "+1 312 555 0112": ""},
            ),
            Location(name="north", timezone="America/Chicago", phones=("+13125550100",)),
        ),
    )
    tracking, lines = kit.practice_numbers(practice)
    assert tracking == {"+13125550111": ("downtown", "google_ads"), "+13125550112": ("downtown", None)}
    assert lines == {"+13125550100": "downtown"}  # the first location listing a number wins
    assert kit.practice_e164(None, "US") is None and kit.practice_e164("12", "US") is None
    assert kit.redacted_text("550 jane.placeholder@example.com: mailbox full") == "550 [email]: mailbox full"
    assert kit.redacted_text("x" * 400, 10) == "x" * 10 and kit.redacted_text(None) is None
