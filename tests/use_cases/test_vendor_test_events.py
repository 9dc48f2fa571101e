"""Vendors' test and sample events are stored and shown, and kept out of the figures
(issue 8, item 5; :mod:`carecrm.core.analytics.vendor_tests`).

Through the public API: Google Ads' "Send test data" lead (the corpus file, ``is_test:
true``, which the connector marks ``test: true``) and a real lead from the same form;
the pipeline report, the leaderboard, attribution and segments count the real one only;
both timelines show what came in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carecrm.core import CareCRM
from carecrm.core.analytics import vendor_tests
from carecrm.core.analytics.criteria import And
from carecrm.core.errors import NotFound
from carecrm.core.model.domain import Actor, RawPayload
from carecrm.core.testing import resources

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[2]
CORPUS = resources.corpus_dir(REPO)
TEST_LEAD = CORPUS / "google_ads_lead_form" / "test_lead_consumer_form.json"
MAKE = Callable[..., CareCRM]

needs_corpus = resources.needs_corpus(CORPUS, TEST_LEAD)

REAL_EMAIL = "jane.doe@lakeside-mail.org"
REAL_PHONE = "+13125550142"


def _payload(doc: dict[str, Any]) -> RawPayload:
    return RawPayload(body=json.dumps(doc).encode(), content_type="application/json", origin="lead.json")


def _real(test: dict[str, Any], lead_id: str = "real-lead-1", **changes: Any) -> dict[str, Any]:
    """The corpus's test lead made a real one: other lead and click ids, ``is_test``
    false, another person."""
    doc = dict(test, lead_id=lead_id, gcl_id=f"gclid-{lead_id}", is_test=False)
    doc["user_column_data"] = [
        {"column_id": "FULL_NAME", "string_value": "Jane Doe"},
        {"column_id": "EMAIL", "string_value": REAL_EMAIL},
        {"column_id": "PHONE_NUMBER", "string_value": REAL_PHONE},
    ]
    doc.update(changes)
    return doc


def _ingest(app: CareCRM, *docs: dict[str, Any]) -> None:
    report = app.ingest_payloads("google_ads_lead_form", [_payload(d) for d in docs], actor=ACTOR, verify=False)
    assert report.quarantined == []


def _new_leads(app: CareCRM, stage: str = "new_lead") -> int:
    return next(s.count for s in app.pipeline_report() if s.stage == stage)


@needs_corpus
def test_a_test_lead_is_shown_but_counts_in_no_figure(make_app: MAKE) -> None:
    app = make_app()
    test = json.loads(TEST_LEAD.read_text())
    _ingest(app, test, _real(test))

    # stored and shown: both timelines, the test one marked
    test_tl = app.timeline("+16505550123", actor=ACTOR)
    (shown,) = test_tl.interactions
    assert shown.kind == "ad_lead.submitted" and shown.attributes["test"] is True
    real_tl = app.timeline(REAL_EMAIL, actor=ACTOR)
    (real,) = real_tl.interactions
    assert "test" not in real.attributes

    # the pipeline report: one new lead, not two
    assert _new_leads(app) == 1
    # lead scores: the test contact is never scored, the leaderboard has the real one only
    top = app.score_top(10, actor=ACTOR)
    assert [c.id for c, _ in top] == [real_tl.contact.id]
    with pytest.raises(NotFound, match="test events"):
        app.rescore(test_tl.contact.id)
    # attribution: one lead conversion, credited to Google Ads once
    report = app.attribute("first_touch", by="source", step="lead")
    assert (report.conversions, report.touches) == (1, 1)
    assert [(r.key, r.credit) for r in report.rows] == [("google_ads", 1.0)]
    # segments: every contact is one contact
    assert app.segment_count(And()) == 1
    assert list(app.segment_ids(And())) == [real_tl.contact.id]
    preview = app.segment_preview(And(), actor=ACTOR, limit=5)
    assert preview.count == 1 and [c.id for c in preview.contacts] == [real_tl.contact.id]


@needs_corpus
def test_a_test_event_of_a_real_contact_adds_nothing_to_its_figures(make_app: MAKE) -> None:
    app = make_app(scoring={"rules": [{"kind": "ad_lead.submitted", "points": 10}]})  # every lead scores
    test = json.loads(TEST_LEAD.read_text())
    _ingest(app, _real(test))
    contact = app.timeline(REAL_EMAIL, actor=ACTOR).contact
    ((_, before),) = app.score_top(10, actor=ACTOR)
    # a second lead of the same person, sent as a test from the ad platform
    _ingest(app, _real(test, "real-lead-2-test", is_test=True))
    timeline = app.timeline(REAL_EMAIL, actor=ACTOR)
    assert sorted(bool(i.attributes.get("test")) for i in timeline.interactions) == [False, True]
    ((shown, after),) = app.score_top(10, actor=ACTOR)
    assert shown.id == contact.id and after.score == before.score == 10
    _, explained = app.score_explain(REAL_EMAIL, actor=ACTOR)
    assert explained.score == 10
    # the person books a consult: one journey, whose only touch is the real lead
    app.set_stage(contact.id, "consult_scheduled", actor=ACTOR)
    report = app.attribute("linear", by="source", step="consult_scheduled")
    assert (report.conversions, report.touches) == (1, 1)
    assert _new_leads(app, "consult_scheduled") == 1 and app.segment_count(And()) == 1


@needs_corpus
def test_a_test_contact_that_sends_a_real_lead_counts_from_then_on(make_app: MAKE) -> None:
    app = make_app()
    test = json.loads(TEST_LEAD.read_text())
    _ingest(app, test)
    assert _new_leads(app) == 0 and app.segment_count(And()) == 0 and app.score_top(5, actor=ACTOR) == []
    assert app.attribute(step="lead").conversions == 0
    # the same phone number, now a real lead: nothing to update, it counts
    real = dict(test, lead_id="real-3", gcl_id="gclid-real-3", is_test=False)
    _ingest(app, real)
    assert len(app.timeline("+16505550123", actor=ACTOR).interactions) == 2
    assert _new_leads(app) == 1 and app.segment_count(And()) == 1 and len(app.score_top(5, actor=ACTOR)) == 1
    assert app.attribute(step="lead").conversions == 1


def test_only_true_marks_a_test_and_bookkeeping_is_neutral() -> None:
    assert vendor_tests.is_test({"test": True})
    assert not any(vendor_tests.is_test(a) for a in ({"test": "true"}, {"test": 1}, {}, None))

    class Fact:
        def __init__(self, kind: str, **attributes: Any) -> None:
            self.kind, self.attributes = kind, attributes

    lead, sample = Fact("form.submitted"), Fact("form.submitted", test=True)
    stage, note = Fact("stage.changed"), Fact("note.added")
    assert vendor_tests.is_test_timeline([sample, stage, note])  # a coordinator's work is no lead
    assert not vendor_tests.is_test_timeline([sample, lead])
    assert not vendor_tests.is_test_timeline([stage])
    assert not vendor_tests.is_test_timeline([])


@needs_corpus
def test_without_live_scoring_the_figures_learn_of_test_events_at_recompute(make_app: MAKE) -> None:
    app = make_app(scoring={"live": False})
    test = json.loads(TEST_LEAD.read_text())
    _ingest(app, test, _real(test))
    # the figures look for test contacts once scoring has seen a test event
    assert _new_leads(app) == 2 and app.segment_count(And()) == 2
    assert app.rescore_all() == 1  # the test contact is not scored
    assert _new_leads(app) == 1 and app.segment_count(And()) == 1
    assert app.attribute(step="lead").conversions == 1
    assert [c.id for c, _ in app.score_top(5, actor=ACTOR)] == [app.timeline(REAL_EMAIL, actor=ACTOR).contact.id]


def test_segments_remember_whether_a_test_event_was_seen(make_app: MAKE) -> None:
    """A segment count does not read the setting on every call: a "seen" is kept for good,
    a "not seen" for a few seconds; a process that notes a test event itself is told at
    once, another process's note is learnt when the "not seen" expires."""
    now = [100.0]
    cache = vendor_tests.SeenCache(ttl_seconds=5, clock=lambda: now[0])
    app = make_app()
    reads: list[bool] = []
    real_seen = vendor_tests.seen

    def counted(uow: Any) -> bool:
        reads.append(True)
        return real_seen(uow)

    vendor_tests.seen = counted  # type: ignore[assignment]
    try:
        with app.storage.unit_of_work() as uow:
            assert cache.seen(uow) is False and cache.seen(uow) is False
            assert len(reads) == 1  # the second answer came from memory
        with app.storage.unit_of_work() as uow:  # another process notes a test event
            vendor_tests.note_seen(uow)
            uow.commit()
        with app.storage.unit_of_work() as uow:
            assert cache.seen(uow) is False  # not yet: the "no" is 0 s old
            now[0] += 5
            assert cache.seen(uow) is True and len(reads) == 2
            now[0] += 3600
            assert cache.seen(uow) is True and len(reads) == 2  # a yes is for good
    finally:
        vendor_tests.seen = real_seen  # type: ignore[assignment]
    fresh = vendor_tests.SeenCache(clock=lambda: now[0])
    fresh.mark()
    with app.storage.unit_of_work() as uow:
        assert fresh.seen(uow) is True
    assert vendor_tests.seen_cache(app.storage) is vendor_tests.seen_cache(app.storage)
