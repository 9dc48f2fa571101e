"""Segments through the public API: the ``basic`` builder's specs, "within N days" in the
practice's local calendar (daylight-saving changes included), previews (audited), saved
segments, filter trees, and bad input that names the field or lists the known names."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from carecrm.core import CareCRM, InteractionDraft, LeadEvent, NotFound, UnknownComponentError
from carecrm.core.analytics.criteria import (
    FIELDS,
    And,
    CriteriaError,
    Eq,
    HadInteraction,
    In,
    Not,
    Or,
    Prefix,
    Range,
    local_days_start,
    structure,
    unstructure,
)
from carecrm.core.errors import CareCRMError
from carecrm.core.model.domain import Actor

ACTOR = Actor.parse("tester:admin")

#: The story's "now": Saturday 15 June 2024, 12:00 in Chicago (CDT, UTC-5).
NOW = datetime(2024, 6, 15, 17, 0, tzinfo=UTC)

TWO_LOCATIONS: dict[str, Any] = {
    "name": "Lakeside Dermatology",
    "service_lines": ["acne", "botox", "mohs"],
    "locations": [
        {"name": "downtown", "timezone": "America/Chicago", "region": "US"},
        {"name": "uptown", "timezone": "America/Los_Angeles", "region": "US"},
    ],
}


def lead(
    ref: str,
    *interactions: tuple[str, datetime],
    service: str | None = "acne",
    city: str | None = "Chicago",
    postal: str | None = "60614",
    location: str | None = None,
    first: str = "Pat",
) -> LeadEvent:
    """A lead with an email and the given (kind, time) interactions."""
    return LeadEvent(
        source="test",
        record_ref=ref,
        emails=(f"{ref}@example.com",),
        first_name=first,
        last_name=ref.capitalize(),
        service_interest=service,
        city=city,
        postal_code=postal,
        location=location,
        interactions=tuple(
            InteractionDraft(kind=kind, occurred_at=when, idempotency_key=f"{ref}:{kind}:{when.isoformat()}")
            for kind, when in interactions
        ),
    )


def ingest(app: CareCRM, *events: LeadEvent) -> dict[str, uuid.UUID]:
    """Ingest and return each lead's contact id by record ref."""
    report = app.ingest(events, actor=ACTOR)
    assert not report.quarantined, report.quarantined
    return {e.record_ref: cid for e, cid in zip(events, report.contact_ids, strict=True)}


def set_clear_fields(app: CareCRM, contact_id: uuid.UUID, **fields: Any) -> None:
    """Set score or owner as the scoring and assignment use cases would (test set-up)."""
    with app.storage.unit_of_work() as uow:
        uow.contacts.update(attrs.evolve(uow.contacts.get(contact_id), **fields))
        uow.commit()


def ids(app: CareCRM, spec: Any, **kwargs: Any) -> set[uuid.UUID]:
    return set(app.segment_ids(spec, **kwargs))


@pytest.fixture
def story(make_app: Callable[..., CareCRM]) -> tuple[CareCRM, dict[str, uuid.UUID]]:
    """A Chicago dermatology practice: the acne lead of the story and a few others."""
    app = make_app()
    people = ingest(
        app,
        # inquired about acne in spring, opened two nurture emails, called back in autumn
        lead(
            "maria",
            ("form.submitted", datetime(2024, 3, 20, 14, 0, tzinfo=UTC)),
            ("email.opened", datetime(2024, 4, 2, 13, 0, tzinfo=UTC)),
            ("email.opened", datetime(2024, 5, 7, 13, 0, tzinfo=UTC)),
        ),
        # opened an email long ago only
        lead("ben", ("email.opened", datetime(2024, 1, 5, 13, 0, tzinfo=UTC)), city="Evanston", postal="60201"),
        # botox, opened recently
        lead("cora", ("email.opened", datetime(2024, 6, 1, 13, 0, tzinfo=UTC)), service="botox"),
        # acne in Chicago, never opened anything
        lead("dev", ("form.submitted", datetime(2024, 6, 10, 13, 0, tzinfo=UTC))),
        # acne, clicked (not opened) recently, no city
        lead("eli", ("email.clicked", datetime(2024, 6, 14, 13, 0, tzinfo=UTC)), city=None, postal=None),
    )
    return app, people


# --------------------------------------------------------------------------- the story


def test_had_email_opened_within_90_days_in_chicago(story: tuple[CareCRM, dict[str, uuid.UUID]]) -> None:
    app, p = story
    spec = {
        "stage": "new_lead",
        "service_interest": "acne",
        "city": "Chicago",
        "had": [{"kind": "email.opened", "within_days": 90}],
    }
    # 90 local days before Saturday 15 June 2024 in Chicago: from 17 March 00:00 CDT (05:00 UTC)
    assert app.segment_criteria(spec, now=NOW) == And(
        (
            Eq("stage", "new_lead"),
            Eq("service_interest", "acne"),
            Eq("city", "Chicago"),
            HadInteraction(("email.opened",), since=datetime(2024, 3, 17, 5, 0, tzinfo=UTC)),
        )
    )
    assert app.segment_count(spec, now=NOW) == 1
    preview = app.segment_preview(spec, now=NOW, actor=ACTOR)
    assert [c.id for c in preview.contacts] == [p["maria"]]
    assert preview.contacts[0].full_name == "Pat Maria"
    assert preview.at == NOW
    # a month later her last open (7 May) is more than 30 days old
    assert app.segment_count({**spec, "had": [{"kind": "email.opened", "within_days": 30}]}, now=NOW) == 0
    # any of several kinds
    spec_any = {"had": [{"kinds": ["email.opened", "email.clicked"], "within_days": 14}]}
    assert ids(app, spec_any, now=NOW) == {p["cora"], p["eli"]}


def test_every_field_of_the_spec(story: tuple[CareCRM, dict[str, uuid.UUID]]) -> None:
    app, p = story
    app.set_stage(p["dev"], "contacted", actor=ACTOR)
    # after the last event, so live scoring (if installed) changes nothing more
    set_clear_fields(app, p["maria"], score=42.0, owner="alice")
    set_clear_fields(app, p["ben"], score=5.0, owner="bob")
    set_clear_fields(app, p["cora"], score=15.5, owner=None)
    set_clear_fields(app, p["dev"], score=None, owner="alice")
    set_clear_fields(app, p["eli"], score=None, owner=None)
    everyone = set(p.values())
    assert ids(app, {}) == everyone
    assert ids(app, {"stage": ["contacted"]}) == {p["dev"]}
    assert ids(app, {"stage": ["new_lead", "contacted"]}) == everyone
    assert ids(app, {"service_interest": "botox"}) == {p["cora"]}
    assert ids(app, {"service_interest": ["Botox", "acne"]}) == everyone
    assert ids(app, {"city": ["Evanston"]}) == {p["ben"]}
    assert ids(app, {"city": ["Chicago", "Evanston"]}) == everyone - {p["eli"]}
    assert ids(app, {"city": "chicago"}) == ids(app, {"city": "Chicago"})  # any casing: cities are title-cased
    assert ids(app, {"postal_prefix": "602"}) == {p["ben"]}
    assert ids(app, {"postal_prefix": "60"}) == everyone - {p["eli"]}
    assert ids(app, {"location": "downtown"}) == everyone  # leads get the default location
    assert ids(app, {"score_min": 15.5}) == {p["maria"], p["cora"]}
    assert ids(app, {"score_max": 15.5}) == {p["ben"], p["cora"]}
    assert ids(app, {"score_min": 5, "score_max": 20}) == {p["ben"], p["cora"]}
    assert ids(app, {"owner": "alice"}) == {p["maria"], p["dev"]}
    assert ids(app, {"owner": "alice", "stage": "new_lead", "score_min": 40}) == {p["maria"]}
    # two interaction conditions must both hold
    both = {"had": [{"kind": "form.submitted", "within_days": 365}, {"kind": "email.opened", "within_days": 365}]}
    assert ids(app, both, now=NOW) == {p["maria"]}


def test_a_filter_tree_is_run_as_given(story: tuple[CareCRM, dict[str, uuid.UUID]]) -> None:
    app, p = story
    tree = Or((Eq("city", "Evanston"), And((Eq("service_interest", "acne"), Not(Eq("city", "Chicago"))))))
    assert ids(app, tree) == {p["ben"], p["eli"]}
    assert app.segment_count(In("service_interest", ("acne", "mohs")) & Prefix("postal_prefix", "606")) == 2
    assert app.segment_count(~HadInteraction(("email.opened",), since=datetime(2024, 1, 1, tzinfo=UTC))) == 2
    set_clear_fields(app, p["cora"], score=-1.0)
    assert app.segment_count(Range("score", max=-0.5)) == 1


def test_preview_decrypts_names_and_audits_each_contact_shown(story: tuple[CareCRM, dict[str, uuid.UUID]]) -> None:
    app, p = story
    before = len(app.audit_log(limit=1000))
    preview = app.segment_preview({"service_interest": "acne"}, limit=2, actor=ACTOR)
    assert preview.count == 4
    assert [c.id for c in preview.contacts] == sorted([p["maria"], p["ben"], p["dev"], p["eli"]])[:2]
    assert all(c.full_name and c.full_name.startswith("Pat ") for c in preview.contacts)
    entries = app.audit_log(limit=1000)[before:]
    assert [(e.action, e.contact_id, e.purpose, e.fields) for e in entries] == [
        ("contact.read", c.id, "segment", ["name"]) for c in preview.contacts
    ]
    assert app.verify_audit_chain()[0]
    # counting and listing ids read no personal data: nothing is audited
    app.segment_preview({"service_interest": "acne"}, limit=0, actor=ACTOR)
    app.segment_count({"service_interest": "acne"})
    list(app.segment_ids({"service_interest": "acne"}))
    assert len(app.audit_log(limit=1000)) == before + 2


def test_segment_ids_pages_through_all_in_id_order(story: tuple[CareCRM, dict[str, uuid.UUID]]) -> None:
    app, p = story
    every = sorted(p.values())
    assert list(app.segment_ids({}, page_size=2)) == every
    assert list(app.segment_ids({}, page_size=5)) == every
    assert list(app.segment_ids({"service_interest": "mohs"}, page_size=1)) == []
    with pytest.raises(ValueError, match="page_size"):
        app.segment_ids({}, page_size=0)


# --------------------------------------------------------------------------- local days


def test_within_days_counts_local_days_across_spring_forward(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    # Chicago springs forward on Sunday 10 March 2024 (02:00 CST -> 03:00 CDT)
    now = datetime(2024, 3, 12, 15, 0, tzinfo=UTC)  # Tuesday 10:00 CDT
    p = ingest(
        app,
        lead("late", ("email.opened", datetime(2024, 3, 9, 5, 59, 59, 999000, tzinfo=UTC))),  # Fri 8 Mar 23:59 CST
        lead("first", ("email.opened", datetime(2024, 3, 9, 6, 0, tzinfo=UTC))),  # Sat 9 Mar 00:00 CST
        lead("mon", ("email.opened", datetime(2024, 3, 11, 5, 0, tzinfo=UTC))),  # Mon 11 Mar 00:00 CDT
        lead("sun", ("email.opened", datetime(2024, 3, 11, 4, 59, tzinfo=UTC))),  # Sun 10 Mar 23:59 CDT
    )

    def within(days: int) -> set[uuid.UUID]:
        return ids(app, {"had": [{"kind": "email.opened", "within_days": days}]}, now=now)

    # three local days before Tuesday: Saturday 00:00 CST = 06:00 UTC (72 hours before
    # Tuesday's midnight would be 05:00 UTC, and the UTC date would start at 00:00 UTC)
    assert local_days_start(now, "America/Chicago", 3) == datetime(2024, 3, 9, 6, 0, tzinfo=UTC)
    assert within(3) == {p["first"], p["mon"], p["sun"]}
    assert within(2) == {p["mon"], p["sun"]}  # from Sunday 00:00 CST
    assert within(1) == {p["mon"]}  # from Monday 00:00 CDT = 05:00 UTC
    assert within(0) == set()


def test_within_days_counts_local_days_across_fall_back(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    # Chicago falls back on Sunday 3 November 2024 (02:00 CDT -> 01:00 CST)
    now = datetime(2024, 11, 4, 18, 0, tzinfo=UTC)  # Monday 12:00 CST
    p = ingest(
        app,
        lead("sat", ("email.opened", datetime(2024, 11, 2, 5, 30, tzinfo=UTC))),  # Sat 2 Nov 00:30 CDT
        lead("fri", ("email.opened", datetime(2024, 11, 2, 4, 30, tzinfo=UTC))),  # Fri 1 Nov 23:30 CDT
    )
    spec = {"had": [{"kind": "email.opened", "within_days": 2}]}
    # two local days before Monday: Saturday 00:00 CDT = 05:00 UTC (not 06:00, 48 hours
    # before Monday's midnight CST)
    assert ids(app, spec, now=now) == {p["sat"]}


def test_within_days_uses_the_filtered_location_time_zone(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(practice=TWO_LOCATIONS)
    now = datetime(2024, 6, 15, 5, 30, tzinfo=UTC)  # Sat 00:30 in Chicago, still Fri 22:30 in Los Angeles
    p = ingest(
        app,
        lead("west", ("email.opened", datetime(2024, 6, 15, 2, 0, tzinfo=UTC)), location="uptown"),  # Fri 19:00 PDT
    )
    today = [{"kind": "email.opened", "within_days": 0}]
    assert ids(app, {"location": "uptown", "had": today}, now=now) == {p["west"]}  # Friday in Los Angeles
    assert ids(app, {"had": today}, now=now) == set()  # already Saturday in Chicago (the default location)
    assert ids(app, {"location": "downtown", "had": today}, now=now) == set()


def test_local_days_start_refuses_naive_now_and_negative_days() -> None:
    with pytest.raises(CriteriaError, match="now"):
        local_days_start(datetime(2024, 6, 15, 12, 0), "America/Chicago", 1)
    with pytest.raises(CriteriaError, match="within_days"):
        local_days_start(NOW, "America/Chicago", -1)


# --------------------------------------------------------------------------- saved segments


def test_save_list_show_delete(story: tuple[CareCRM, dict[str, uuid.UUID]]) -> None:
    app, p = story
    spec = {"service_interest": ["Acne"], "had": [{"kind": "email.opened", "within_days": 90}]}
    saved = app.segment_save("acne openers", spec, actor=ACTOR)
    assert saved.builder == "basic"
    assert saved.spec == {"service_interest": ["acne"], "had": [{"kinds": ["email.opened"], "within_days": 90}]}
    assert saved.description == "service interest acne; had email.opened within 90 days"
    assert saved.created_by == "tester"
    with pytest.raises(CareCRMError, match="exists"):
        app.segment_save("acne openers", {}, actor=ACTOR)
    app.segment_save("everyone", {}, actor=ACTOR)
    assert [s.name for s in app.segment_list()] == ["acne openers", "everyone"]
    # the window stays relative: it moves with the day the segment is shown on
    assert [c.id for c in app.segment_show("acne openers", now=NOW, actor=ACTOR).contacts] == [p["maria"]]
    assert app.segment_show("acne openers", now=NOW + timedelta(days=60), actor=ACTOR).count == 0
    shown = app.segment_show("acne openers", now=NOW, limit=0, actor=ACTOR)
    assert (shown.count, shown.contacts, shown.segment) == (1, (), app.segment_get("acne openers"))
    assert app.saved_segment_criteria("acne openers", now=NOW) == app.segment_criteria(spec, now=NOW)
    replaced = app.segment_save("acne openers", {"city": "Evanston"}, replace=True, actor=ACTOR)
    assert replaced.created_at == saved.created_at and replaced.updated_at >= saved.updated_at
    assert app.segment_show("acne openers", actor=ACTOR).count == 1
    app.segment_delete("acne openers", actor=ACTOR)
    with pytest.raises(NotFound):
        app.segment_show("acne openers", actor=ACTOR)
    with pytest.raises(NotFound):
        app.segment_delete("acne openers", actor=ACTOR)
    actions = [e.action for e in app.audit_log(limit=1000)]
    assert actions.count("segment.save") == 3 and actions.count("segment.delete") == 1


def test_a_saved_filter_tree_keeps_absolute_times(story: tuple[CareCRM, dict[str, uuid.UUID]]) -> None:
    app, p = story
    tree = HadInteraction(("email.opened",), since=datetime(2024, 5, 1, tzinfo=UTC)) & Eq("city", "Chicago")
    saved = app.segment_save("may openers", tree, actor=ACTOR)
    assert (saved.builder, saved.spec, saved.description) == (None, None, "filter tree")
    assert saved.criteria == unstructure(tree)
    assert app.segment_show("may openers", actor=ACTOR).count == 2
    assert {c.id for c in app.segment_show("may openers", now=NOW + timedelta(days=999), actor=ACTOR).contacts} == {
        p["maria"],
        p["cora"],
    }


def test_segment_names_are_checked(story: tuple[CareCRM, dict[str, uuid.UUID]]) -> None:
    app, _ = story
    for bad in ("", "   ", "x" * 256, "tab\there"):
        with pytest.raises(CriteriaError, match="segment name"):
            app.segment_save(bad, {}, actor=ACTOR)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("spec", "family", "name", "known"),
    [
        ({"colour": "red"}, "segment field", "colour", "city, had, location, owner, postal_prefix"),
        ({"stage": "lead"}, "stage", "lead", "new_lead, no_show, not_a_candidate, nurture"),
        ({"service_interest": "tattoo"}, "service interest", "tattoo", "acne, botox, mohs"),
        ({"location": "harbor"}, "location", "harbor", "downtown"),
        ({"had": [{"kind": "email.open", "within_days": 1}]}, "interaction kind", "email.open", "email.opened"),
    ],
)
def test_unknown_names_list_the_known_ones(
    make_app: Callable[..., CareCRM], spec: dict[str, Any], family: str, name: str, known: str
) -> None:
    app = make_app()
    with pytest.raises(UnknownComponentError) as info:
        app.segment_count(spec)
    assert info.value.family == family and info.value.name == name
    assert known in str(info.value)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"stage": []}, None),  # an empty list is no filter
        ({"stage": [""]}, "stage"),
        ({"stage": 3}, "stage"),
        ({"city": [None]}, "city"),
        ({"score_min": "high"}, "score_min"),
        ({"score_max": True}, "score_max"),
        ({"score_min": 10, "score_max": 2}, "score_min"),
        ({"postal_prefix": "60614"}, "postal_prefix"),
        ({"owner": ""}, "owner"),
        ({"had": [{"kind": "email.opened"}]}, "had[0]"),
        ({"had": [{"kind": "email.opened", "within_days": -1}]}, "had[0]"),
        ({"had": [{"kind": "email.opened", "within_days": 1.5}]}, "had[0]"),
        ({"had": [{"kind": "email.opened", "kinds": ["email.clicked"], "within_days": 1}]}, "had[0]"),
        ({"had": [{"kind": "email.opened", "within_days": 1, "since": "2024"}]}, "had[0]"),
        ({"had": "email.opened"}, "had"),
    ],
)
def test_bad_values_name_the_field(make_app: Callable[..., CareCRM], spec: dict[str, Any], field: str | None) -> None:
    app = make_app()
    if field is None:
        assert app.segment_count(spec) == 0
        return
    with pytest.raises(CriteriaError) as info:
        app.segment_count(spec)
    assert f"'{field}'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_an_unknown_builder_lists_the_known_ones(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(segments={"builder": "fancy"})
    with pytest.raises(UnknownComponentError, match="known: basic"):
        app.segment_count({})
    assert app.segment_count(Eq("stage", "new_lead")) == 0  # a tree needs no builder


def test_the_basic_builder_is_a_built_in_plugin(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    info = {p.name: p for p in app.plugins_info()}["carecrm.plugins.segments.basic"]
    assert (info.families, info.origin, info.components) == (("segment",), "built-in", ("segment:basic",))


# --------------------------------------------------------------------------- the tree itself


def test_criteria_json_round_trip() -> None:
    tree = And(
        (
            In("stage", ("new_lead", "contacted")),
            Range("score", 10, None),
            Prefix("postal_prefix", "606"),
            HadInteraction(("email.opened",), since=datetime(2024, 3, 1, 6, tzinfo=UTC), until=NOW),
            Not(Eq("owner", None)),
            Or(()),
        )
    )
    doc = unstructure(tree)
    assert doc["all"][3] == {
        "had": {"kinds": ["email.opened"], "since": "2024-03-01T06:00:00.000Z", "until": "2024-06-15T17:00:00.000Z"}
    }
    assert structure(doc) == tree


def test_unknown_field_in_a_tree_lists_the_known_ones() -> None:
    with pytest.raises(UnknownComponentError) as info:
        Eq("email", "x")
    assert info.value.known == sorted(FIELDS)
    with pytest.raises(UnknownComponentError, match="known: city"):
        structure({"all": [{"field": "name", "op": "eq", "value": "x"}]})
    with pytest.raises(UnknownComponentError, match=r"at \$.op .like.; known: eq, in, prefix, range"):
        structure({"field": "city", "op": "like", "value": "x"})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Eq("score", "high"), "'score': expected a number"),
        (lambda: Eq("city", 3), "'city': expected text"),
        (lambda: In("city", ["Chicago", None]), "'city': a value is needed"),
        (lambda: Range("city", 1, 2), "'city': a range needs a numeric field"),
        (lambda: Range("score"), "'score': a range needs a minimum"),
        (lambda: Range("score", 5, 1), "'score': the range's minimum is above"),
        (lambda: Prefix("score", "1"), "'score': a prefix needs a text field"),
        (lambda: Prefix("city", ""), "'city': the prefix is empty"),
        (lambda: HadInteraction((), since=NOW), "at least one interaction kind"),
        (lambda: HadInteraction(("email.opened",), since=datetime(2024, 1, 1)), "timezone-aware"),
        (lambda: HadInteraction(("email.opened",), since=NOW, until=NOW), "until must be later"),
        (lambda: And(("not a node",)), "must hold criteria"),
        (lambda: structure({"all": [{"had": {"kinds": ["x.y"], "since": "yesterday"}}]}), r"\$.all\[0\].had.since"),
        (lambda: structure({"field": "city", "op": "eq"}), r"\$: an 'eq' node"),
        (lambda: structure({"anything": 1}), "not a segment criterion"),
        (lambda: structure([1]), r"\$: expected an object"),
    ],
)
def test_malformed_trees_are_refused_naming_the_field_or_path(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(CriteriaError, match=message):
        build()
