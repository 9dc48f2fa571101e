"""Tests of the CallRail webhook connector (``carecrm.plugins.sources.callrail``).

The legacy (v1) post-call parameters come from the vendor corpus (``$CARECRM_TEST_CORPUS``,
else ``../shared/corpus`` beside the clone; folder ``callrail``).  No v3 JSON webhook sample was
published; the v3 payloads here are built from CallRail's documented call object
(https://apidocs.callrail.com/#calls) with fictional 555-01xx numbers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from carecrm.core import CareCRM
from carecrm.core.config import Settings
from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, Location, Practice, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.callrail import CallRailConnector

ACTOR = Actor.parse("tester:admin")

REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
LEGACY = CORPUS / "callrail" / "legacy_post_call_v1.query.txt"

needs_corpus = resources.needs_corpus(CORPUS, LEGACY)

FORM = "application/x-www-form-urlencoded"
CALLER = "+12615550123"
MAKE = Callable[..., CareCRM]

PRACTICE = Practice(
    name="Test Dermatology",
    locations=(
        Location(name="downtown", timezone="America/Chicago", phones=("+13125550100",)),
        Location(
            name="north",
            timezone="America/Chicago",
            phones=("(201) 555-0100",),
            tracking_numbers={"(201) 555-0111": "google-ads-north", "+13125550177": "billboard"},
        ),
    ),
)


def connector(practice: Practice = PRACTICE, **options: Any) -> CallRailConnector:
    return CallRailConnector(name="callrail", options=options, settings=Settings(practice=practice))


def legacy_params(**changes: str | None) -> dict[str, str]:
    params = dict(urllib.parse.parse_qsl(LEGACY.read_text().strip(), keep_blank_values=True))
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params


def legacy_payload(**changes: str | None) -> RawPayload:
    return RawPayload(body=urllib.parse.urlencode(legacy_params(**changes)).encode(), content_type=FORM)


def one(c: CallRailConnector, payload: RawPayload) -> LeadEvent:
    (event,) = list(c.parse(payload))
    assert isinstance(event, LeadEvent), event
    return event


def v3_call(**changes: Any) -> dict[str, Any]:
    """A v3 post-call webhook body: the documented call object's fields."""
    call: dict[str, Any] = {
        "answered": True,
        "business_phone_number": "+13125550100",
        "customer_city": "Chicago",
        "customer_country": "US",
        "customer_name": "MARIA GARCIA",
        "customer_phone_number": "+13125550142",
        "customer_state": "IL",
        "direction": "inbound",
        "duration": 184,
        "id": "CAL8154748ae6bd4e278a7cddd38a662f4f",
        "resource_id": "CAL8154748ae6bd4e278a7cddd38a662f4f",
        "recording": "https://api.callrail.com/v3/a/227799611/calls/CAL8154748ae6bd4e278a7cddd38a662f4f/recording.json",
        "recording_duration": "170",
        "recording_player": "https://app.callrail.com/calls/CAL8154748ae6bd4e278a7cddd38a662f4f/recording?access_key=x",
        "start_time": "2024-03-05T09:15:02.119-06:00",
        "tracking_phone_number": "+13125550177",
        "voicemail": False,
        "call_type": "first_call",
        "company_id": "COM8154748ae6bd4e278a7cddd38a662f4f",
        "company_time_zone": "America/Chicago",
        "created_at": "2024-03-05T09:15:02.119-06:00",
        "first_call": True,
        "formatted_customer_location": "Chicago, IL",
        "source": "Google Paid",
        "source_name": "Google Ads",
        "medium": "CPC",
        "campaign": "Spring Botox",
        "keywords": "botox near me",
        "landing_page_url": "https://clinic.example.com/botox?utm_source=google&utm_medium=cpc&gclid=EAIaIQ&fbx=1",
        "referring_url": "https://www.google.com/search?q=botox+near+me",
        "referrer_domain": "www.google.com",
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "",
        "utm_term": None,
        "utm_content": "",
        "gclid": "EAIaIQobChMI",
        "transcription": "Caller asked about botox pricing.",
        "note": "",
        "lead_status": "good_lead",
        "tags": [],
        "person_resource_id": "PER8154748ae6bd4e278a7cddd38a662f4f",
    }
    call.update(changes)
    return call


def v3_payload(call: dict[str, Any] | None = None, **headers: str) -> RawPayload:
    return RawPayload(body=json.dumps(call or v3_call()).encode(), content_type="application/json", headers=headers)


def sign(body: bytes, token: str) -> str:
    return base64.b64encode(hmac.new(token.encode(), body, hashlib.sha1).digest()).decode()


# --------------------------------------------------------------------------- legacy (v1) parameters


@needs_corpus
def test_legacy_sample_identity_and_interaction() -> None:
    event = one(connector(time_zone="America/New_York"), legacy_payload())
    assert event.phones == (CALLER,)
    assert event.emails == ()
    # "SKYPE CALLER" is caller-ID text, not a name: not passed on, and never confident
    assert (event.first_name, event.last_name, event.full_name) == (None, None, None)
    assert event.name_confidence == "low"
    assert event.record_ref == "201235151"
    # number geolocation and the web visitor's IP never reach the contact
    assert (event.city, event.region, event.postal_code) == (None, None, None)
    assert set(event.dropped_fields) == {"callercity", "callerstate", "callerzip", "callercountry", "ip", "callername"}
    (draft,) = event.interactions
    assert draft.kind == "call.completed"
    assert draft.channel == "phone"
    assert draft.direction == "inbound"
    assert draft.idempotency_key == "call.completed:201235151"
    assert draft.occurred_at == datetime(2014, 10, 9, 20, 23, 45, tzinfo=UTC)
    a = draft.attributes
    assert a["duration_seconds"] == 247
    assert a["answered"] is True
    assert a["first_call"] is True
    assert a["external_record_id"] == "201235151"
    assert a["tracking_number"] == "+12015550111"
    assert a["destination_number"] == "+12015550100"  # "2015550100": 10 digits, no +1
    assert a["callsource"] == "keyword"
    assert a["recording_available"] is True
    assert "callrail.com" not in json.dumps(a)  # the recording link is PHI: body only
    assert draft.body is not None
    assert "recording: http://app.callrail.com/calls/201235151/recording/9f59ad59ba1cfa264312" in draft.body
    assert "transcription" not in draft.body  # empty in the sample


@needs_corpus
def test_legacy_sample_touchpoint_has_no_empty_strings() -> None:
    tp = one(connector(Practice()), legacy_payload()).touchpoint  # no tracking-number campaigns
    assert (tp.source, tp.medium, tp.campaign, tp.term, tp.content, tp.gclid) == (None,) * 6
    assert tp.landing_page == "http://acme.com/"
    assert tp.referrer == "direct"


@needs_corpus
def test_legacy_datetime_is_company_local_time() -> None:
    def at(c: CallRailConnector) -> datetime:
        return one(c, legacy_payload()).interactions[0].occurred_at

    assert at(connector(time_zone="America/New_York")) == datetime(2014, 10, 9, 20, 23, 45, tzinfo=UTC)
    # default: the practice's default location's zone (downtown, America/Chicago: CDT)
    assert at(connector()) == datetime(2014, 10, 9, 21, 23, 45, tzinfo=UTC)
    assert at(connector(time_zone="UTC")) == datetime(2014, 10, 9, 16, 23, 45, tzinfo=UTC)
    assert at(connector(Practice(locations=(Location(name="x", timezone="America/New_York"),)))) == datetime(
        2014, 10, 9, 20, 23, 45, tzinfo=UTC
    )


@needs_corpus
def test_legacy_parameters_in_the_url_or_with_a_json_content_type() -> None:
    query = LEGACY.read_text().strip()
    expected = one(connector(), legacy_payload())
    from_url = one(connector(), RawPayload(body=b"", content_type=FORM, url=f"https://crm.example/hooks?{query}"))
    default_type = one(connector(), RawPayload(body=query.encode()))  # RawPayload's default is JSON
    assert from_url == expected
    assert default_type == expected


@needs_corpus
@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"answered": "false"}, "call.missed"),
        ({"answered": "FALSE", "voicemail": "true"}, "call.voicemail"),
        ({"answered": None}, "call.missed"),
    ],
)
def test_legacy_kinds(changes: dict[str, str | None], kind: str) -> None:
    draft = one(connector(), legacy_payload(**changes)).interactions[0]
    assert draft.kind == kind
    assert draft.idempotency_key == f"{kind}:201235151"


@needs_corpus
def test_real_looking_caller_id_is_kept_as_low_confidence() -> None:
    event = one(connector(), legacy_payload(callername="MARIA GARCIA", callercity="", callerzip=None))
    assert event.full_name == "MARIA GARCIA"
    assert event.name_confidence == "low"
    assert "callername" not in event.dropped_fields
    assert "callercity" not in event.dropped_fields  # empty: nothing dropped
    assert "callerzip" not in event.dropped_fields


@needs_corpus
@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_caller_number_fails_the_record(value: str | None) -> None:
    (failure,) = list(connector().parse(legacy_payload(callernum=value)))
    assert isinstance(failure, Rejected)
    found = (failure.ref, failure.field, failure.reason)
    assert found == ("201235151", "callernum", "missing")


@needs_corpus
def test_bad_datetime_fails_the_record() -> None:
    (failure,) = list(connector().parse(legacy_payload(datetime="yesterday")))
    assert isinstance(failure, Rejected)
    assert failure.field == "datetime"
    (failure,) = list(connector().parse(legacy_payload(datetime=None)))
    assert isinstance(failure, Rejected) and failure.field == "datetime"


@needs_corpus
def test_tracking_number_gives_location_and_campaign() -> None:
    event = one(connector(), legacy_payload())
    assert event.location == "north"  # "(201) 555-0111" in config is +12015550111
    assert event.interactions[0].location == "north"
    assert event.touchpoint.campaign == "google-ads-north"
    # a UTM campaign of the visit is more specific than the number's campaign
    assert one(connector(), legacy_payload(utm_campaign="spring")).touchpoint.campaign == "spring"
    # an unknown tracking number: the destination line still names the location
    event = one(connector(), legacy_payload(trackingnum="+12015550199"))
    assert event.location == "north" and event.touchpoint.campaign is None
    event = one(connector(), legacy_payload(trackingnum="+12015550199", destinationnum="+19995550100"))
    assert event.location is None


@needs_corpus
def test_utm_and_click_ids_from_the_landing_page() -> None:
    event = one(
        connector(),
        legacy_payload(landingpage="https://acme.com/botox?utm_source=google&utm_medium=cpc&gclid=abc&session=42"),
    )
    tp = event.touchpoint
    assert (tp.source, tp.medium, tp.gclid) == ("google", "cpc", "abc")
    assert tp.landing_page == "https://acme.com/botox"


# --------------------------------------------------------------------------- v3 JSON


def test_v3_post_call() -> None:
    event = one(connector(), v3_payload())
    assert event.phones == ("+13125550142",)
    assert event.full_name == "MARIA GARCIA" and event.name_confidence == "low"
    assert event.record_ref == "CAL8154748ae6bd4e278a7cddd38a662f4f"
    assert event.location == "north"  # +13125550177 is north's billboard number
    assert set(event.dropped_fields) == {
        "customer_city",
        "customer_state",
        "customer_country",
        "formatted_customer_location",
    }
    (draft,) = event.interactions
    assert draft.kind == "call.completed"
    assert draft.idempotency_key == "call.completed:CAL8154748ae6bd4e278a7cddd38a662f4f"
    assert draft.occurred_at == datetime(2024, 3, 5, 15, 15, 2, 119000, tzinfo=UTC)
    a = draft.attributes
    assert (a["duration_seconds"], a["answered"], a["first_call"], a["voicemail"]) == (184, True, True, False)
    assert a["tracking_number"] == "+13125550177"
    assert a["callsource"] == "Google Paid"
    assert a["source_name"] == "Google Ads"
    assert a["lead_status"] == "good_lead"
    assert a["recording_available"] is True
    blob = json.dumps(a)
    for personal in ("callrail.com/calls", "Chicago", "MARIA", "5550142", "botox pricing"):
        assert personal not in blob
    assert draft.body is not None
    assert draft.body.startswith("recording: https://api.callrail.com/")
    assert "transcription: Caller asked about botox pricing." in draft.body
    tp = event.touchpoint
    assert (tp.source, tp.medium, tp.gclid) == ("google", "cpc", "EAIaIQobChMI")
    assert tp.campaign == "Spring Botox"  # utm_campaign empty: CallRail's campaign
    assert tp.content is None and tp.term == "botox near me"
    assert tp.landing_page == "https://clinic.example.com/botox"
    assert tp.referrer == "https://www.google.com/search"  # the search terms stay out


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"answered": False}, "call.missed"),
        ({"answered": False, "voicemail": True}, "call.voicemail"),
        ({"answered": "false", "voicemail": "true"}, "call.voicemail"),
        ({"answered": None, "voicemail": None, "call_type": "voicemail"}, "call.voicemail"),
    ],
)
def test_v3_kinds(changes: dict[str, Any], kind: str) -> None:
    draft = one(connector(), v3_payload(v3_call(**changes))).interactions[0]
    assert draft.kind == kind


def test_v3_outbound_and_old_numeric_id() -> None:
    call = v3_call(direction="outbound", id=111222333)
    del call["resource_id"]
    event = one(connector(), v3_payload(call))
    assert event.interactions[0].direction == "outbound"
    assert event.interactions[0].idempotency_key == "call.completed:111222333"
    assert event.record_ref == "111222333"


def test_v3_call_modified_resend_has_the_same_key() -> None:
    first = one(connector(), v3_payload()).interactions[0]
    modified = one(connector(), v3_payload(v3_call(note="Booked consult", tags=[{"name": "New patient"}])))
    assert modified.interactions[0].idempotency_key == first.idempotency_key
    assert "note: Booked consult" in (modified.interactions[0].body or "")


def test_v3_missing_caller_number_and_time() -> None:
    (failure,) = list(connector().parse(v3_payload(v3_call(customer_phone_number=""))))
    assert isinstance(failure, Rejected)
    found = (failure.ref, failure.field, failure.reason)
    assert found == ("CAL8154748ae6bd4e278a7cddd38a662f4f", "callernum", "missing")
    (failure,) = list(connector().parse(v3_payload(v3_call(start_time="soon", created_at=None))))
    assert isinstance(failure, Rejected) and failure.field == "start_time"
    # start_time missing: created_at stands in
    event = one(connector(), v3_payload(v3_call(start_time=None)))
    assert event.interactions[0].occurred_at == datetime(2024, 3, 5, 15, 15, 2, 119000, tzinfo=UTC)


def test_v3_time_without_offset_uses_the_company_zone() -> None:
    call = v3_call(start_time="2024-03-05 09:15:02", company_time_zone="America/Los_Angeles")
    assert one(connector(), v3_payload(call)).interactions[0].occurred_at == datetime(2024, 3, 5, 17, 15, 2, tzinfo=UTC)
    call = v3_call(start_time="2024-03-05 09:15:02", company_time_zone="Nowhere/Else")
    assert one(connector(time_zone="UTC"), v3_payload(call)).interactions[0].occurred_at == datetime(
        2024, 3, 5, 9, 15, 2, tzinfo=UTC
    )


def test_v3_placeholder_caller_id_is_dropped() -> None:
    event = one(connector(), v3_payload(v3_call(customer_name="WIRELESS CALLER")))
    assert event.full_name is None
    assert "customer_name" in event.dropped_fields


def test_unreadable_bodies() -> None:
    for body, reason in ((b"{nope", "not JSON"), (b"hello", "not JSON"), (b"", "empty"), (b"[1, 2]", "call object")):
        with pytest.raises(ValidationFailed) as err:
            list(connector().parse(RawPayload(body=body)))
        assert err.value.field == "body"
        assert reason in err.value.reason


# --------------------------------------------------------------------------- signature and options


def test_v3_signature() -> None:
    c = connector(verify_signature=True)
    assert c.signed is True
    assert connector().signed is False and CallRailConnector.signed is False
    body = json.dumps(v3_call()).encode()
    c.verify(RawPayload(body=body, headers={"signature": sign(body, "tok")}), "tok")
    cases = [
        ({}, "missing"),
        ({"Signature": "%%%"}, "not base64"),
        ({"Signature": sign(body, "other")}, "does not match"),
        ({"Signature": sign(body + b" ", "tok")}, "does not match"),
    ]
    for headers, reason in cases:
        with pytest.raises(ValidationFailed) as err:
            c.verify(RawPayload(body=body, headers=headers), "tok")
        assert (err.value.record, err.value.field) == ("payload", "Signature")
        assert reason in err.value.reason
    # without verify_signature nothing is checked (legacy webhooks are unsigned)
    connector().verify(RawPayload(body=body, headers={"Signature": "bogus"}), "tok")


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown option 'timezone'"):
        connector(timezone="UTC")
    with pytest.raises(ConfigError, match="unknown IANA time zone"):
        connector(time_zone="Mars/Olympus")
    with pytest.raises(ConfigError, match="verify_signature"):
        connector(verify_signature="yes")


# --------------------------------------------------------------------------- registration and the app


def test_registered_as_a_built_in(make_app: MAKE) -> None:
    assert "carecrm.plugins.sources.callrail" in DEFAULT_PLUGINS
    app = make_app()  # no [sources.callrail] table at all
    assert isinstance(app.connector("callrail"), CallRailConnector)
    app2 = make_app(sources={"callrail": {}})
    assert isinstance(app2.connector("callrail"), CallRailConnector)


@needs_corpus
def test_legacy_sample_through_the_app(make_app: MAKE) -> None:
    app = make_app(sources={"callrail": {"time_zone": "America/New_York"}})
    report = app.ingest_payloads("callrail", [legacy_payload()], actor=ACTOR)
    assert report.quarantined == []
    assert report.contacts_created == 1 and report.interactions_added == 1
    assert report.dropped_fields["callercity"] == 1
    timeline = app.timeline(CALLER, actor=ACTOR)
    contact = timeline.contact
    assert contact.phones() == [CALLER]
    assert (contact.first_name, contact.last_name) == (None, None)
    assert contact.name_confidence == "low"
    assert (contact.city, contact.postal_code) == (None, None)
    (inter,) = timeline.interactions
    assert inter.kind == "call.completed"
    assert inter.channel == "phone" and inter.direction == "inbound"
    assert inter.occurred_at == datetime(2014, 10, 9, 20, 23, 45, tzinfo=UTC)
    assert inter.attributes["first_call"] is True
    assert inter.attributes["duration_seconds"] == 247
    tp = inter.touchpoint
    assert (tp.source, tp.medium, tp.campaign, tp.term, tp.content, tp.gclid) == (None,) * 6
    assert tp.landing_page == "http://acme.com/"
    assert tp.channel_group == "direct"
    assert inter.body is not None and "recording:" in inter.body  # decrypted for the timeline
    # a call-modified re-send (same id, same kind) adds nothing
    again = app.ingest_payloads("callrail", [legacy_payload(transcription="Hello")], actor=ACTOR)
    assert again.interactions_added == 0 and again.contacts_created == 0 and again.quarantined == []


@needs_corpus
@pytest.mark.parametrize("callername", ["SKYPE CALLER", "JOHN SMITH"])
def test_existing_contact_keeps_her_name(make_app: MAKE, callername: str) -> None:
    app = make_app(sources={"callrail": {}})
    maria = app.add_contact(first_name="Maria", last_name="Lopez", phones=["(261) 555-0123"], actor=ACTOR)
    report = app.ingest_payloads("callrail", [legacy_payload(callername=callername)], actor=ACTOR)
    assert report.quarantined == [] and report.contacts_created == 0 and report.review_pairs == 0
    timeline = app.timeline(CALLER, actor=ACTOR)
    assert timeline.contact.id == maria.id
    assert (timeline.contact.first_name, timeline.contact.last_name) == ("Maria", "Lopez")
    assert [i.kind for i in timeline.interactions] == ["call.completed"]


@needs_corpus
def test_missing_caller_number_is_quarantined(make_app: MAKE) -> None:
    app = make_app(sources={"callrail": {}})
    report = app.ingest_payloads("callrail", [legacy_payload(callernum=None)], actor=ACTOR)
    assert report.interactions_added == 0
    (q,) = report.quarantined
    assert (q.source, q.record, q.field) == ("callrail", "201235151", "callernum")
    assert app.inbox_list(status="quarantined", source="callrail")


def test_signed_v3_through_the_app(make_app: MAKE, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECRM_TEST_CALLRAIL_TOKEN", "company-token")
    app = make_app(sources={"callrail": {"secret": "$env:CARECRM_TEST_CALLRAIL_TOKEN", "verify_signature": True}})
    body = json.dumps(v3_call()).encode()
    good = RawPayload(body=body, headers={"Signature": sign(body, "company-token")})
    report = app.ingest_payloads("callrail", [good], actor=ACTOR)
    assert report.quarantined == [] and report.interactions_added == 1
    contact = app.timeline("+13125550142", actor=ACTOR).contact
    assert contact.location == "downtown"  # the test app's practice has no tracking numbers
    assert contact.full_name == "MARIA GARCIA" and contact.name_confidence == "low"
    bad_body = json.dumps(v3_call(resource_id="CAL2", id="CAL2")).encode()
    bad = app.ingest_payloads(
        "callrail", [RawPayload(body=bad_body, headers={"Signature": sign(bad_body, "x")})], actor=ACTOR
    )
    (q,) = bad.quarantined
    assert q.field == "Signature"
    # verify_signature without a secret: unsigned payloads are never accepted silently
    app2 = make_app(sources={"cr2": {"connector": "callrail", "verify_signature": True}})
    with pytest.raises(ConfigError, match="no secret"):
        app2.ingest_payloads("cr2", [good], actor=ACTOR)
