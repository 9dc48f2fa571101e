"""Marketing attribution through the public API: the four built-in models, what counts as
a touch, conversion steps, the lookback window, bad input."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import attrs
import pytest

from carecrm.core import (
    CareCRM,
    ConfigError,
    InteractionDraft,
    LeadEvent,
    PluginError,
    Touchpoint,
    UnknownComponentError,
    hookimpl,
)
from carecrm.core.analytics.attribution import AttributionModel, Touch, check_weights
from carecrm.core.config import settings_from_dict
from carecrm.core.model.domain import Actor
from carecrm.core.model.timeutil import utcnow
from carecrm.core.plugins.options import NoOptions

ACTOR = Actor.parse("tester:admin")

MODELS = ("first_touch", "last_touch", "last_non_direct", "linear")
_seq = itertools.count()


def touch(group: str, minute: int = 0, **fields: Any) -> Touch:
    """A hand-made touch of ``group`` at 12:00 + ``minute`` on 2026-01-05."""
    return Touch(
        interaction_id=uuid.uuid4(),
        occurred_at=datetime(2026, 1, 5, 12, minute, tzinfo=UTC),
        kind=fields.pop("kind", "form.submitted"),
        channel_group=group,
        **fields,
    )


def event(
    email: str,
    kind: str,
    when: datetime,
    *,
    tp: Touchpoint | None = None,
    direction: str | None = None,
    channel: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> LeadEvent:
    """One lead event with one interaction for the person at ``email``."""
    n = next(_seq)
    return LeadEvent(
        source="test",
        record_ref=f"r{n}",
        emails=(email,),
        interactions=(
            InteractionDraft(
                kind=kind,
                occurred_at=when,
                idempotency_key=f"{kind}:{n}",
                channel=channel,
                direction=direction,
                touchpoint=tp,
                attributes=attributes or {},
            ),
        ),
    )


GOOGLE_ADS = Touchpoint(source="google", medium="cpc", campaign="spring-acne", gclid="abc")
FACEBOOK_ADS = Touchpoint(source="facebook", medium="paid_social", campaign="botox-fb")
NURTURE = Touchpoint(source="sendgrid", medium="email", campaign="acne-nurture")
ORGANIC = Touchpoint(source="google", medium="organic")


def credits(app: CareCRM, **kwargs: Any) -> dict[str, float]:
    report = app.attribute(**kwargs)
    return {row.key: round(row.credit, 6) for row in report.rows}


# --------------------------------------------------------------------------- models on hand-made journeys


def test_each_model_weighs_a_hand_made_journey(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    journey = [touch("paid_search", 0), touch("email", 1), touch("direct", 2)]
    at = datetime(2026, 1, 6, tzinfo=UTC)
    assert list(app.attribution_model("first_touch").attribute(journey, at)) == [1.0, 0.0, 0.0]
    assert list(app.attribution_model("last_touch").attribute(journey, at)) == [0.0, 0.0, 1.0]
    assert list(app.attribution_model("last_non_direct").attribute(journey, at)) == [0.0, 1.0, 0.0]
    assert list(app.attribution_model("linear").attribute(journey, at)) == pytest.approx([1 / 3] * 3)
    for name in MODELS:
        for size in (1, 2, 3, 7, 10):
            weights = app.attribution_model(name).attribute([touch("organic_search", i) for i in range(size)], at)
            check_weights(name, weights, size)  # sums to one, one weight per touch, none negative


def test_last_non_direct_skips_direct_touches_and_falls_back_to_the_last(make_app: Callable[..., CareCRM]) -> None:
    model = make_app().attribution_model("last_non_direct")
    at = datetime(2026, 1, 6, tzinfo=UTC)
    assert list(model.attribute([touch("paid_social", 0), touch("direct", 1), touch("direct", 2)], at)) == [1, 0, 0]
    assert list(model.attribute([touch("direct", 0), touch("direct", 1)], at)) == [0, 1]
    assert list(model.attribute([touch("direct", 0)], at)) == [1]


def test_bad_weights_from_a_plugin_model_are_refused(make_app: Callable[..., CareCRM]) -> None:
    class Scant(AttributionModel):
        model_id = "scant"

        def attribute(self, touches: Sequence[Touch], conversion_at: datetime) -> list[float]:
            return [0.4] * len(touches)

    class Plugin:
        @hookimpl
        def carecrm_register_attribution_models(self, register: Callable[..., None]) -> None:
            register(Scant)

    app = make_app()
    extra = CareCRM(app.settings, load_entrypoints=False, extra_plugins=[Plugin()])
    try:
        assert "scant" in extra.attribution_models.names()
        email = "scant@example.com"
        now = utcnow()
        extra.ingest([event(email, "form.submitted", now - timedelta(days=3), tp=GOOGLE_ADS)], actor=ACTOR)
        extra.ingest([event(email, "page.viewed", now - timedelta(days=2), tp=ORGANIC)], actor=ACTOR)
        extra.set_stage(email, "booked_patient", actor=ACTOR)
        with pytest.raises(PluginError, match="'scant' returned weights summing to 0.8 for a journey of 2 touches"):
            extra.attribute(model="scant")
    finally:
        extra.close()
    with pytest.raises(PluginError, match="2 weights for a journey of 3 touches"):
        check_weights("x", [0.5, 0.5], 3)
    with pytest.raises(PluginError, match="not a number >= 0"):
        check_weights("x", [1.5, -0.5], 2)
    with pytest.raises(PluginError, match="not a number >= 0"):
        check_weights("x", [float("nan")], 1)


# --------------------------------------------------------------------------- through the app


@pytest.fixture
def practice(make_app: Callable[..., CareCRM]) -> tuple[CareCRM, datetime]:
    """Four people:

    * ana: Google Ads form 200 days ago, a nurture email opened (no touch) and clicked,
      the coordinator's outbound call (no touch), her own call 30 days ago (no
      touchpoint: direct), booked now;
    * ben: Facebook Ads form 10 days ago, booked now;
    * cara: a form, never booked (no conversion);
    * dan: a form 400 days ago, booked now: a conversion with no touch in 365 days.
    """
    app = make_app()
    now = utcnow()
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    app.ingest(
        [
            event("ana@example.com", "form.submitted", ago(200), tp=GOOGLE_ADS, channel="web"),
            event("ana@example.com", "email.opened", ago(150), tp=NURTURE, channel="email"),
            event("ana@example.com", "email.clicked", ago(149), tp=NURTURE, channel="email", direction="outbound"),
            event("ana@example.com", "call.completed", ago(31), direction="outbound", channel="phone"),
            event("ana@example.com", "call.completed", ago(30), direction="inbound", channel="phone"),
            event("ben@example.com", "form.submitted", ago(10), tp=FACEBOOK_ADS, channel="web"),
            event("cara@example.com", "form.submitted", ago(5), tp=ORGANIC, channel="web"),
            event("dan@example.com", "form.submitted", ago(400), tp=GOOGLE_ADS, channel="web"),
        ],
        actor=ACTOR,
    )
    for email in ("ana@example.com", "ben@example.com", "dan@example.com"):
        app.set_stage(email, "booked_patient", actor=ACTOR)
    return app, now


def test_four_models_by_channel_group(practice: tuple[CareCRM, datetime]) -> None:
    app, _ = practice
    assert credits(app, model="first_touch") == {"paid_search": 1, "paid_social": 1}
    assert credits(app, model="last_touch") == {"direct": 1, "paid_social": 1}
    assert credits(app, model="last_non_direct") == {"email": 1, "paid_social": 1}
    assert credits(app, model="linear") == {
        "paid_social": 1,
        "paid_search": pytest.approx(1 / 3),
        "email": pytest.approx(1 / 3),
        "direct": pytest.approx(1 / 3),
    }
    for name in MODELS:
        report = app.attribute(model=name)
        assert (report.conversions, report.conversions_touched, report.conversions_without_touch) == (3, 2, 1)
        assert sum(r.credit for r in report.rows) == pytest.approx(report.conversions_touched)
        assert report.touches == 4  # ana: form, click, her call; ben: form
        assert (report.step, report.lookback_days, report.by) == ("booked_patient", 365, "channel_group")


def test_rows_are_sorted_and_count_the_conversions_they_share(practice: tuple[CareCRM, datetime]) -> None:
    app, _ = practice
    report = app.attribute(model="linear")
    assert [r.key for r in report.rows] == ["paid_social", "direct", "email", "paid_search"]
    assert all(r.conversions == 1 for r in report.rows)


def test_by_source_and_by_campaign(practice: tuple[CareCRM, datetime]) -> None:
    app, _ = practice
    assert credits(app, model="first_touch", by="source") == {"google": 1, "facebook": 1}
    assert credits(app, model="last_touch", by="source") == {"(not set)": 1, "facebook": 1}
    assert credits(app, model="last_non_direct", by="campaign") == {"acne-nurture": 1, "botox-fb": 1}
    assert credits(app, model="linear", by="campaign") == {
        "botox-fb": 1,
        "spring-acne": pytest.approx(1 / 3),
        "acne-nurture": pytest.approx(1 / 3),
        "(not set)": pytest.approx(1 / 3),
    }


def test_lookback_window_includes_its_edge_and_nothing_before(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    email = "edge@example.com"
    app.ingest([event(email, "form.submitted", utcnow() - timedelta(days=3), tp=ORGANIC)], actor=ACTOR)
    change = app.set_stage(email, "booked_patient", actor=ACTOR)
    edge = change.changed_at - timedelta(days=365)
    app.ingest([event(email, "ad.clicked", edge, tp=GOOGLE_ADS)], actor=ACTOR)
    app.ingest([event(email, "ad.clicked", edge - timedelta(milliseconds=1), tp=FACEBOOK_ADS)], actor=ACTOR)
    assert credits(app, model="first_touch") == {"paid_search": 1}
    assert credits(app, model="first_touch", lookback_days=364) == {"organic_search": 1}
    assert credits(app, model="first_touch", lookback_days=366) == {"paid_social": 1}
    # a touch after the conversion never counts
    app.ingest([event(email, "sms.received", utcnow() + timedelta(minutes=5), tp=FACEBOOK_ADS)], actor=ACTOR)
    assert credits(app, model="last_touch") == {"organic_search": 1}


def test_offline_touches_count_and_outbound_calls_do_not(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    now = utcnow()
    app.ingest(
        [
            event("call@example.com", "call.completed", now - timedelta(days=9), tp=ORGANIC, direction="inbound"),
            event("ref@example.com", "referral.received", now - timedelta(days=8), channel="referral"),
            event("walk@example.com", "walk_in.visited", now - timedelta(days=7), channel="in_person"),
            event("out@example.com", "call.completed", now - timedelta(days=6), tp=ORGANIC, direction="outbound"),
            event("vm@example.com", "call.voicemail", now - timedelta(days=6), tp=GOOGLE_ADS),
        ],
        actor=ACTOR,
    )
    for email in ("call@example.com", "ref@example.com", "walk@example.com", "out@example.com", "vm@example.com"):
        app.set_stage(email, "booked_patient", actor=ACTOR)
    report = app.attribute(model="first_touch")
    assert {r.key: r.credit for r in report.rows} == {
        "organic_search": 1,  # the inbound call, classified from its touchpoint
        "referral_physician": 1,  # a referral without a touchpoint
        "direct": 1,  # the walk-in
        "paid_search": 1,  # a voicemail of unknown direction counts
    }
    assert report.conversions_without_touch == 1  # only the practice's own outbound call


def test_opens_and_sends_are_not_touches_but_clicks_are(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    now = utcnow()
    email = "nurture@example.com"
    app.ingest(
        [
            event(email, "email.sent", now - timedelta(days=5), tp=NURTURE, direction="outbound"),
            event(email, "email.opened", now - timedelta(days=4), tp=NURTURE, attributes={"machine_open": False}),
            event(email, "email.clicked", now - timedelta(days=3)),  # no touchpoint: still email
        ],
        actor=ACTOR,
    )
    app.set_stage(email, "booked_patient", actor=ACTOR)
    report = app.attribute(model="linear")
    assert {r.key: r.credit for r in report.rows} == {"email": 1}
    assert report.touches == 1


def test_steps_of_the_ladder(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    now = utcnow()
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    app.ingest(
        [
            # skips: a page view, then the first inquiry, then booked straight away
            event("skip@example.com", "page.viewed", ago(20), tp=ORGANIC),
            event("skip@example.com", "form.submitted", ago(19), tp=GOOGLE_ADS),
            event("skip@example.com", "sms.received", ago(2), tp=FACEBOOK_ADS),
            # stays at consult_scheduled, reached through an implied move
            event("consult@example.com", "chat.started", ago(15), tp=FACEBOOK_ADS),
            event(
                "consult@example.com",
                "appointment.booked",
                ago(14),
                attributes={"appointment_type": "consult"},
            ),
            event("consult@example.com", "page.viewed", ago(1), tp=ORGANIC),
            # paid: a payment is a conversion, never a touch
            event("paid@example.com", "ad.clicked", ago(12), tp=GOOGLE_ADS),
            event("paid@example.com", "payment.received", ago(11), attributes={"amount": 300}),
            event("paid@example.com", "payment.received", ago(1), attributes={"amount": 300}),
        ],
        actor=ACTOR,
    )
    app.set_stage("skip@example.com", "booked_patient", actor=ACTOR)
    assert app.conversion_steps() == (
        "lead",
        "consult_scheduled",
        "consult_attended",
        "booked_patient",
        "revenue",
        "returning_patient",
    )
    # lead: the first inquiry; the page view before it counts, the later text does not
    lead = app.attribute(model="linear", step="lead")
    assert lead.conversions == 2  # skip and consult (an ad click is not an inquiry)
    assert {r.key: round(r.credit, 6) for r in lead.rows} == {
        "organic_search": 0.5,
        "paid_search": 0.5,
        "paid_social": 1,
    }
    # consult_scheduled: the implied move (14 days ago) and skip's jump to booked_patient (now)
    consult = app.attribute(model="last_touch", step="consult_scheduled")
    assert consult.conversions == 2
    assert {r.key: r.credit for r in consult.rows} == {"paid_social": 2}
    assert app.attribute(step="consult_attended").conversions == 1  # skip only
    assert app.attribute(step="booked_patient").conversions == 1
    assert app.attribute(step="returning_patient").conversions == 0
    app.set_stage("skip@example.com", "returning_patient", actor=ACTOR)
    assert credits(app, model="first_touch", step="returning_patient") == {"organic_search": 1}
    # revenue: the first payment, with the click before it
    revenue = app.attribute(model="last_touch", step="revenue")
    assert (revenue.conversions, revenue.touches) == (1, 1)
    assert {r.key: r.credit for r in revenue.rows} == {"paid_search": 1}


def test_since_and_until_are_read_in_the_practice_time_zone(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()  # America/Chicago: UTC-6 in winter
    app.ingest(
        [
            # Feb 28, 23:30 in Chicago
            event("late@example.com", "form.submitted", datetime(2026, 3, 1, 5, 30, tzinfo=UTC), tp=GOOGLE_ADS),
            # Mar 1, 01:00 in Chicago
            event("early@example.com", "form.submitted", datetime(2026, 3, 1, 7, 0, tzinfo=UTC), tp=ORGANIC),
        ],
        actor=ACTOR,
    )
    both = app.attribute(step="lead")
    assert both.conversions == 2
    march = app.attribute(step="lead", since=date(2026, 3, 1))
    assert {r.key for r in march.rows} == {"organic_search"}
    assert march.since == datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    february = app.attribute(step="lead", until=date(2026, 2, 28))
    assert {r.key for r in february.rows} == {"paid_search"}
    assert february.until == datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    exact = app.attribute(step="lead", since=datetime(2026, 3, 1, 7, 0, tzinfo=UTC))
    assert exact.conversions == 1, "since is inclusive"
    before = app.attribute(step="lead", until=datetime(2026, 3, 1, 7, 0, tzinfo=UTC))
    assert before.conversions == 1, "until is exclusive for a datetime"
    assert app.attribute(step="lead", since=date(2026, 3, 2)).conversions == 0


def test_unknown_names_list_the_known_ones(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    with pytest.raises(UnknownComponentError) as exc:
        app.attribute(model="time_decay")
    assert exc.value.known == sorted(MODELS)
    assert "first_touch, last_non_direct, last_touch, linear" in str(exc.value)
    with pytest.raises(UnknownComponentError) as exc:
        app.attribute(by="medium")
    assert exc.value.known == ["campaign", "channel_group", "source"]
    with pytest.raises(UnknownComponentError) as exc:
        app.attribute(step="booked")
    assert "booked_patient" in exc.value.known and "revenue" in exc.value.known


def test_bad_values_name_the_field(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    for bad in (0, -5, 3651, 2.5, True):
        with pytest.raises(ValueError, match="lookback_days"):
            app.attribute(lookback_days=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="since: a datetime needs a time zone"):
        app.attribute(since=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="since: must be before until"):
        app.attribute(since=date(2026, 3, 2), until=date(2026, 3, 1))


def test_a_step_the_pipeline_lacks_is_unknown(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(pipeline={"stages": ["new_lead", "contacted", "booked_patient"]})
    assert app.conversion_steps() == ("lead", "booked_patient", "revenue")
    with pytest.raises(UnknownComponentError, match="known: booked_patient, lead, revenue"):
        app.attribute(step="consult_attended")


@attrs.frozen(kw_only=True)
class _NoteOptions:
    note: str = ""


class _Noted(AttributionModel):
    model_id = "noted"
    options_type = _NoteOptions

    def attribute(self, touches: Sequence[Touch], conversion_at: datetime) -> list[float]:
        return [1.0 / len(touches)] * len(touches)


class _NotedPlugin:
    @hookimpl
    def carecrm_register_attribution_models(self, register: Callable[..., None]) -> None:
        register(_Noted)


def test_model_options_come_from_config(make_app: Callable[..., CareCRM]) -> None:
    base = make_app()
    doc = {**base.settings.raw, "attribution": {"models": {"noted": {"note": "kept"}}}}
    settings = settings_from_dict(doc, base_dir=base.settings.base_dir)
    app = CareCRM(settings, keys=base.keys, load_entrypoints=False, extra_plugins=[_NotedPlugin()])
    assert app.attribution_model("noted").options == _NoteOptions(note="kept")
    assert app.attribution_model("first_touch").options == NoOptions()
    app.close()
    # a built-in model takes no options: an unknown key is an error when the app starts
    with pytest.raises(ConfigError, match=r"attribution\.models\.linear\.note: unknown option 'note'"):
        make_app(attribution={"models": {"linear": {"note": "kept"}}})
    with pytest.raises(UnknownComponentError, match="unknown attribution model 'lineer'"):
        make_app(attribution={"models": {"lineer": {}}})


def test_built_in_models_are_listed_as_a_plugin(make_app: Callable[..., CareCRM]) -> None:
    info = {p.name: p for p in make_app().plugins_info()}
    basic = info["carecrm.plugins.attribution.basic"]
    assert basic.origin == "built-in" and basic.families == ("attribution",)
    assert set(basic.components) == {f"attribution:{m}" for m in MODELS}


def test_an_empty_practice_has_no_conversions(make_app: Callable[..., CareCRM]) -> None:
    for step in make_app().conversion_steps():
        report = make_app().attribute(step=step)
        assert (report.rows, report.conversions, report.touches) == ((), 0, 0)


def test_the_documented_model_runs(make_app: Callable[..., CareCRM]) -> None:
    import re
    import types
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "attribution.md").read_text()
    source = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class PositionBased" in b)
    module = types.ModuleType("position_based")
    exec(compile(source, "docs/attribution.md", "exec"), module.__dict__)  # noqa: S102
    app = make_app()
    extra = CareCRM(app.settings, load_entrypoints=False, extra_plugins=[module])
    try:
        now = utcnow()
        email = "u@example.com"
        for days, tp in ((30, GOOGLE_ADS), (20, ORGANIC), (10, NURTURE), (5, FACEBOOK_ADS)):
            extra.ingest([event(email, "page.viewed", now - timedelta(days=days), tp=tp)], actor=ACTOR)
        extra.set_stage(email, "booked_patient", actor=ACTOR)
        assert credits(extra, model="position_based") == {
            "paid_search": 0.4,
            "paid_social": 0.4,
            "organic_search": 0.1,
            "email": 0.1,
        }
    finally:
        extra.close()
