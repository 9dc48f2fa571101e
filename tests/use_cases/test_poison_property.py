"""Property: whatever text or JSON a vendor puts in any field, each record ends stored or
quarantined and the run never raises (issue #7, item 11).

Hypothesis feeds arbitrary Unicode (lone surrogates, NUL and control characters
included) and arbitrary JSON values (hypothesis ``recursive`` strategies) through every
field of a mapped source: person fields, ids, time, touchpoint, attributes and a consent
checkbox, through :meth:`CareCRM.ingest_payloads` as a webhook body; and straight through
every text field of a :class:`LeadEvent` with :meth:`CareCRM.ingest`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carecrm.core import CareCRM
from carecrm.core.model.domain import Actor, ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.plugins.sources.mapped import PERSON_FIELDS, TOUCHPOINT_FIELDS

ACTOR = Actor.parse("tester:admin")

NASTY = ["\ud83d", "\udcff", "\x00", "\x07", "\x1b", "\x7f", "\x85", "\t", "\n", "\u2028", "\u202e", "\ufeff", "\ufffd"]

#: any code point, surrogates included, with the troublesome ones often
texts = st.text(st.characters(exclude_categories=()) | st.sampled_from(NASTY), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
#: a field's value: mostly text, sometimes any JSON value, sometimes deeply nested
values = texts | json_values | st.integers(min_value=34, max_value=60).map(lambda n: json.loads("[" * n + "]" * n))

FIELDS = [*PERSON_FIELDS, *(f"tp_{f}" for f in TOUCHPOINT_FIELDS), "attr", "consent", "record_id", "person_id"]

SOURCE: dict[str, Any] = {
    "connector": "mapped",
    "format": "json",
    "kind": "form.submitted",
    "channel": "web",
    "record_id": "record_id",
    "person_id": "person_id",
    "occurred_at": "occurred_at",
    "occurred_at_fallback": "received",
    "time_format": "iso8601",
    # a good address beside the arbitrary one, so most records reach matching and storage
    "fields": {f: f"[good_email, {f}]" if f == "email" else f for f in PERSON_FIELDS},
    "touchpoint": {f: f"tp_{f}" for f in TOUCHPOINT_FIELDS},
    "attributes": {"anything": "attr", "all_of_it": "@"},
    "consent": [
        {"field": "consent", "contact_point": "email", "channel": "email", "purpose": "marketing", "text": "Yes"}
    ],
}
COLLECT = {"date_of_birth": True, "sex": True, "street_address": True}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    record=st.fixed_dictionaries({}, optional={f: values for f in [*FIELDS, "occurred_at"]}), n=st.integers(0, 10**9)
)
def test_every_mapped_field_ends_stored_or_quarantined(
    make_app: Callable[..., CareCRM], record: dict[str, Any], n: int
) -> None:
    app = _app(make_app)
    # a nonce (unmapped) makes each call's bytes new: hypothesis replays examples, and a
    # byte-identical re-delivery is a duplicate payload, not a record
    record = {"good_email": f"lead{n}@example.com", "nonce": next(_NONCE), **record}
    body = json.dumps(record, ensure_ascii=True).encode("ascii")
    payload = RawPayload(body=body, headers={"X-\ud83d": "\x00\udcff"}, url="https://x/\ud83d", origin="f\udcff.json")
    report = app.ingest_payloads("form", [payload], actor=ACTOR)  # never raises
    assert report.payloads == 1
    [entry] = app.inbox_list(limit=1)
    if report.quarantined:
        assert entry.status == "quarantined"
    else:
        assert entry.status in ("processed", "ignored")
        assert report.accepted + report.duplicates + report.empty_payloads == 1
    for q in report.quarantined:
        q.message().encode("utf-8")  # printable: no lone surrogate reaches a message
        assert "\x00" not in q.message() and "\x1b" not in q.message()
    for w in report.warnings:
        w.encode("utf-8")


leads = st.builds(
    LeadEvent,
    source=st.just("poison") | texts,
    record_ref=texts,
    emails=st.lists(texts, max_size=2).map(lambda e: ["good@example.com", *e]),
    phones=st.lists(texts, max_size=2),
    first_name=st.none() | texts,
    last_name=st.none() | texts,
    full_name=st.none() | texts,
    postal_code=st.none() | texts,
    city=st.none() | texts,
    region=st.none() | texts,
    service_interest=st.none() | texts,
    external_ids=st.lists(st.tuples(texts, texts), max_size=1),
    touchpoint=st.builds(
        Touchpoint, source=st.none() | texts, campaign=st.none() | texts, landing_page=st.none() | texts
    ),
    interactions=st.lists(
        st.builds(
            InteractionDraft,
            kind=st.just("form.submitted") | texts,
            occurred_at=st.just(datetime(2024, 5, 1, tzinfo=UTC)),
            idempotency_key=texts.map(lambda t: "k" + t),
            channel=st.none() | st.just("web") | texts,
            body=st.none() | texts,
            attributes=st.dictionaries(texts, json_values, max_size=3),
            touchpoint=st.none() | st.builds(Touchpoint, medium=st.none() | texts),
        ),
        max_size=2,
    ),
    consents=st.lists(
        st.builds(
            ConsentSignal,
            contact_point_kind=st.just("email") | texts,
            channel=st.just("email"),
            purpose=st.just("marketing") | texts,
            status=st.just("granted"),
            occurred_at=st.just(datetime(2024, 5, 1, tzinfo=UTC)),
            idempotency_key=texts.map(lambda t: "c" + t),
            contact_point=st.none() | texts,
            evidence=st.dictionaries(texts, json_values, max_size=3),
        ),
        max_size=1,
    ),
    extra=st.fixed_dictionaries({}, optional={"street_address": texts, "sex": texts}),
    dropped_fields=st.lists(texts, max_size=2),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(leads, min_size=1, max_size=3))
def test_every_lead_event_field_ends_stored_or_quarantined(
    make_app: Callable[..., CareCRM], events: list[LeadEvent]
) -> None:
    app = _app(make_app)
    report = app.ingest(events, actor=ACTOR)  # never raises
    assert report.records == len(events)
    assert report.accepted + report.duplicates + len(report.quarantined) == len(events)
    for q in report.quarantined:
        q.message().encode("utf-8")


_APPS: dict[int, CareCRM] = {}
_NONCE = itertools.count()


def _app(make_app: Callable[..., CareCRM]) -> CareCRM:
    """One app (and database) per test: the fixture is function-scoped, the examples many."""
    key = id(make_app)
    if key not in _APPS:
        _APPS.clear()
        _APPS[key] = make_app(sources={"form": SOURCE}, collect=COLLECT)
    return _APPS[key]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=leads)
def test_the_screens_fast_path_agrees_with_its_field_by_field_checks(
    make_app: Callable[..., CareCRM], event: LeadEvent
) -> None:
    """A record the one-pass check calls clean is exactly one the field-by-field screen
    returns unchanged with no warning; any other record gets the field-by-field screen."""
    from carecrm.core.errors import ValidationFailed
    from carecrm.core.ingest import prepare
    from carecrm.core.ingest.report import IngestReport

    app = _app(make_app)
    preparer = prepare.LeadPreparer(app.settings, app.mapper)

    def screened(at_a_glance: Callable[[LeadEvent], bool]) -> tuple[Any, list[str]]:
        report = IngestReport()
        real = prepare._clean_at_a_glance
        prepare._clean_at_a_glance = at_a_glance  # type: ignore[assignment]
        try:
            return preparer.screen(event, "r1", report), report.warnings
        except ValidationFailed as exc:
            return ("refused", exc.field, exc.reason), report.warnings
        finally:
            prepare._clean_at_a_glance = real

    fast, fast_warnings = screened(prepare._clean_at_a_glance)
    slow, slow_warnings = screened(lambda _event: False)
    assert (fast, fast_warnings) == (slow, slow_warnings)
    if prepare._clean_at_a_glance(event):
        assert slow is event and not slow_warnings
