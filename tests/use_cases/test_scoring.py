"""Lead scoring through the public API: the points model's rules, live updates, reasons,
``score_top`` and bad configuration."""

from __future__ import annotations

import logging
import re
import types
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carecrm.core import (
    CareCRM,
    ConfigError,
    InteractionDraft,
    LeadEvent,
    NotFound,
    UnknownComponentError,
    hookimpl,
    settings_from_dict,
)
from carecrm.core.analytics.scoring import ScoreReason, ScoreResult, ScoringModel, compact_reasons
from carecrm.core.config import Settings
from carecrm.core.events import types as ev
from carecrm.core.model.domain import Actor
from carecrm.core.model.records import InteractionFacts
from carecrm.plugins.scoring.points import DEFAULT_RULES, PointsModel

ACTOR = Actor.parse("tester:admin")

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def fact(kind: str, when: datetime, **attributes: Any) -> InteractionFacts:
    """A stored interaction's clear facts (what the core hands a model)."""
    direction = attributes.pop("direction", None)
    return InteractionFacts(
        id=uuid.uuid4(), contact_id=uuid.UUID(int=1), kind=kind, occurred_at=when, direction=direction,
        attributes=attributes,
    )  # fmt: skip


def points(rules: list[dict[str, Any]] | None = None) -> PointsModel:
    return PointsModel(name="points", options={} if rules is None else {"rules": rules}, settings=Settings())


def draft(kind: str, when: datetime, key: str, **attributes: Any) -> InteractionDraft:
    return InteractionDraft(kind=kind, occurred_at=when, idempotency_key=key, channel="email", attributes=attributes)


def lead(ref: str, email: str, *drafts: InteractionDraft, source: str = "web") -> LeadEvent:
    return LeadEvent(source=source, record_ref=ref, emails=(email,), first_name="Maria", interactions=drafts)


# --------------------------------------------------------------------------- the points model


def test_rules_from_config_sum_every_matching_rule_with_wildcards() -> None:
    model = points(
        [
            {"kind": "email.*", "points": 1},
            {"kind": "email.clicked", "points": 4, "name": "clicked a link"},
            {"kind": "call.completed", "points": 8, "where": {"direction": "inbound"}},
        ]
    )
    result = model.score(
        [
            fact("email.clicked", T0),
            fact("email.opened", T0 + DAY),
            fact("call.completed", T0 + 2 * DAY, direction="inbound"),
            fact("call.completed", T0 + 3 * DAY, direction="outbound"),
            fact("form.submitted", T0 + 4 * DAY),
        ],
        T0 + 5 * DAY,
    )
    assert result.score == 1 + 4 + 1 + 8
    assert [(r.rule, r.kind, r.points) for r in result.reasons] == [
        ("email.*", "email.clicked", 1.0),
        ("clicked a link", "email.clicked", 4.0),
        ("email.*", "email.opened", 1.0),
        ("call.completed where direction=inbound", "call.completed", 8.0),
    ]
    assert all(r.interaction_id is not None and r.occurred_at is not None for r in result.reasons)


def test_first_time_only_earns_once_for_the_earliest_interaction() -> None:
    model = points([{"kind": "form.submitted", "points": 10, "first_time_only": True}])
    second, first = fact("form.submitted", T0 + DAY), fact("form.submitted", T0)
    result = model.score([second, first], T0 + 2 * DAY)  # any order in: read oldest first
    assert result.score == 10
    assert [r.interaction_id for r in result.reasons] == [first.id]
    assert result.reasons[0].rule == "form.submitted (first time)"


def test_decay_halves_points_every_half_life_measured_from_injected_now() -> None:
    model = points([{"kind": "email.opened", "points": 8, "half_life_days": 30}])
    opened = [fact("email.opened", T0)]
    assert model.score(opened, T0).score == 8
    assert model.score(opened, T0 + 30 * DAY).score == 4
    assert model.score(opened, T0 + 60 * DAY).score == 2
    assert model.score(opened, T0 + 15 * DAY).score == pytest.approx(8 * 0.5**0.5, abs=0.005)
    assert model.score(opened, T0 - 10 * DAY).score == 8  # dated after now: full points
    assert model.score(opened, T0 + 30 * DAY) == model.score(opened, T0 + 30 * DAY)  # deterministic


def test_machine_opens_earn_nothing_unless_a_rule_names_machine_open() -> None:
    apple = fact("email.opened", T0, machine_open=True)
    person = fact("email.opened", T0 + timedelta(seconds=1), machine_open=False)
    unknown = fact("email.opened", T0)
    default = points()
    assert default.score([apple], T0).score == 0
    assert default.score([apple], T0).reasons == ()
    assert default.score([person], T0).score == 2
    assert default.score([unknown], T0).score == 2  # a vendor that does not say: a person
    explicit = points(
        [
            {"kind": "email.opened", "points": 2},
            {"kind": "email.opened", "points": 0.5, "where": {"machine_open": True}, "name": "machine open"},
        ]
    )
    result = explicit.score([apple, person], T0)
    assert result.score == 2.5
    assert [(r.rule, r.points) for r in result.reasons] == [("machine open", 0.5), ("email.opened", 2.0)]


def test_where_compares_booleans_strictly() -> None:
    model = points([{"kind": "email.bounced", "points": -5, "where": {"permanent": True}}])
    assert model.score([fact("email.bounced", T0, permanent=1)], T0).score == 0
    assert model.score([fact("email.bounced", T0, permanent=True)], T0).score == -5


def test_default_rules_score_the_worked_example() -> None:
    # spring inquiry, two nurture emails opened (one by Apple's proxy), a call back in autumn
    model = points()
    now = datetime(2026, 10, 12, 16, 0, tzinfo=UTC)
    result = model.score(
        [
            fact("form.submitted", datetime(2026, 4, 2, 15, 0, tzinfo=UTC)),
            fact("email.opened", datetime(2026, 5, 1, 13, 0, tzinfo=UTC), machine_open=True),
            fact("email.opened", datetime(2026, 6, 3, 13, 0, tzinfo=UTC), machine_open=False),
            fact("email.opened", datetime(2026, 7, 1, 13, 0, tzinfo=UTC), machine_open=False),
            fact("call.completed", datetime(2026, 10, 12, 15, 30, tzinfo=UTC), direction="inbound"),
            fact("email.unsubscribed", datetime(2026, 10, 12, 15, 45, tzinfo=UTC)),
        ],
        now,
    )
    kinds = [r.kind for r in result.reasons]
    assert kinds == ["form.submitted", "email.opened", "email.opened", "call.completed", "email.unsubscribed"]
    assert result.reasons[0].points == 10 and result.reasons[3].points == pytest.approx(8, abs=0.01)
    assert 0 < result.reasons[1].points < 0.2  # an open in June is worth little by October
    assert result.score == pytest.approx(sum(r.points for r in result.reasons), abs=0.02)


def test_default_rules_are_valid_and_cover_the_issue_examples() -> None:
    model = points()
    by_kind = {r.kind: r for r in model.rules}
    assert by_kind["form.submitted"].first_time_only and by_kind["form.submitted"].points == 10
    assert by_kind["email.opened"].half_life_days == 30 and by_kind["email.opened"].points == 2
    assert by_kind["email.unsubscribed"].points < 0 and by_kind["email.bounced"].points < 0
    assert len(model.rules) == len(DEFAULT_RULES)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="now"):
        points().score([], datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("form.submitted", r"scoring\.rules: must be an array of tables"),
        ([42], r"scoring\.rules\[0\]: must be a table"),
        ([{"points": 1}], r"scoring\.rules\[0\]\.kind: required"),
        ([{"kind": "Email opened", "points": 1}], r"scoring\.rules\[0\]\.kind: must be a dotted kind"),
        ([{"kind": "email.opened"}], r"scoring\.rules\[0\]\.points: required"),
        ([{"kind": "a.b", "points": 1}, {"kind": "email.opened", "points": "2"}], r"scoring\.rules\[1\]\.points"),
        ([{"kind": "email.opened", "points": True}], r"scoring\.rules\[0\]\.points: must be a number"),
        ([{"kind": "email.opened", "points": float("nan")}], r"scoring\.rules\[0\]\.points: must be a number"),
        ([{"kind": "email.opened", "points": 1, "first_time_only": "yes"}], r"\[0\]\.first_time_only"),
        ([{"kind": "email.opened", "points": 1, "half_life_days": 0}], r"\[0\]\.half_life_days: must be more"),
        ([{"kind": "email.opened", "points": 1, "where": "machine_open"}], r"\[0\]\.where: must be a table"),
        ([{"kind": "email.opened", "points": 1, "where": {"tags": [1]}}], r"\[0\]\.where\.tags"),
        ([{"kind": "email.opened", "points": 1, "name": ""}], r"\[0\]\.name"),
        ([{"kind": "email.opened", "points": 1, "decay": 3}], r"\[0\]\.decay: unknown field; known: kind, points"),
    ],
)
def test_bad_rules_name_the_rule_and_field(rules: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        points(rules)


def test_compact_reasons_keeps_the_largest_and_sums_the_rest() -> None:
    reasons = [ScoreReason(rule="r", kind="page.viewed", points=float(i)) for i in range(10)]
    kept = compact_reasons(reasons, limit=4)
    assert [r.points for r in kept] == [7.0, 8.0, 9.0, 21.0]
    assert kept[-1].count == 7 and kept[-1].rule == "(7 smaller reasons)"
    assert sum(r.points for r in kept) == sum(r.points for r in reasons)
    assert compact_reasons(reasons[:3], limit=4) == reasons[:3]
    assert ScoreReason.from_json(kept[-1].to_json()) == kept[-1]


# --------------------------------------------------------------------------- through the app


def test_scores_update_live_after_ingest_and_keep_their_reasons(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    report = app.ingest(
        [
            lead("a1", "maria@example.com", draft("form.submitted", T0, "f1")),
            lead("a2", "maria@example.com", draft("email.opened", T0 + DAY, "o1", machine_open=True)),
            lead("a3", "maria@example.com", draft("email.clicked", T0 + 2 * DAY, "c1")),
            lead("b1", "lee@example.com", draft("email.opened", T0, "o2", machine_open=True)),
        ],
        actor=ACTOR,
    )
    maria, lee = report.contact_ids[0], report.contact_ids[3]
    contact, stored = app.score_explain("maria@example.com", actor=ACTOR)
    assert contact.id == maria and stored.model == "points"
    reasons = [ScoreReason.from_json(r) for r in stored.reasons]
    assert [(r.kind, r.rule) for r in reasons] == [
        ("form.submitted", "form.submitted (first time)"),
        ("email.clicked", "email.clicked"),
    ]
    assert reasons[0].points == 10 and 0 < reasons[1].points <= 4
    assert stored.score == pytest.approx(sum(r.points for r in reasons), abs=0.01)
    assert contact.score == stored.score  # the clear copy segments filter on
    assert app.score_explain(str(lee), actor=ACTOR)[1].score == 0  # only a machine open

    # one more interaction: the score moves without anyone asking
    app.ingest([lead("a4", "maria@example.com", draft("appointment.booked", T0 + 3 * DAY, "b1"))], actor=ACTOR)
    assert app.score_explain(str(maria), actor=ACTOR)[1].score == pytest.approx(stored.score + 15, abs=0.5)


def test_add_note_and_stage_moves_rescore(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(scoring={"rules": [{"kind": "note.added", "points": 3}, {"kind": "stage.changed", "points": 1}]})
    cid = app.ingest([lead("a", "maria@example.com", draft("form.submitted", T0, "f"))], actor=ACTOR).contact_ids[0]
    assert app.score_explain(str(cid), actor=ACTOR)[1].score == 0
    app.add_note(str(cid), "Asked about acne treatment; call back in autumn", actor=ACTOR)
    assert app.score_explain(str(cid), actor=ACTOR)[1].score == 3
    app.set_stage(str(cid), "contacted", actor=ACTOR)
    assert app.score_explain(str(cid), actor=ACTOR)[1].score == 4


def test_each_contact_is_rescored_once_per_ingest_batch(make_app: Callable[..., CareCRM]) -> None:
    seen: list[ev.ScoreChanged] = []

    class Recorder:
        @hookimpl
        def carecrm_track_event(self, event: ev.Event) -> None:
            if isinstance(event, ev.ScoreChanged):
                seen.append(event)

    app = make_app()
    app.pm.register(Recorder())
    calls: list[list[uuid.UUID]] = []
    rescore = app.scores.rescore_contacts

    def spy(contact_ids: Any, **kwargs: Any) -> Any:
        calls.append(list(contact_ids))
        return rescore(calls[-1], **kwargs)

    app.scores.rescore_contacts = spy  # type: ignore[method-assign]
    events = [lead(f"r{i}", "maria@example.com", draft("email.clicked", T0 + i * DAY, f"k{i}")) for i in range(5)]
    cid = app.ingest(
        [*events, lead("x", "lee@example.com", draft("form.submitted", T0, "fx"))], actor=ACTOR
    ).contact_ids[0]
    lee = app.resolve("lee@example.com", actor=ACTOR).id
    assert calls == [[cid, lee]]  # one rescore of the batch, each contact once
    assert sorted(e.contact_id for e in seen) == sorted([cid, lee])
    assert all(e.old_score is None and e.model == "points" for e in seen)
    seen.clear()
    app.ingest([events[0]], actor=ACTOR)  # a re-delivery records nothing: no rescore, no event
    assert seen == []
    app.ingest([lead("y", "lee@example.com", draft("email.unsubscribed", T0 + DAY, "u"))], actor=ACTOR)
    assert [(e.old_score, e.new_score) for e in seen] == [(10.0, 0.0)]


def test_live_false_leaves_scores_to_recompute(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(scoring={"live": False})
    cid = app.ingest([lead("a", "maria@example.com", draft("form.submitted", T0, "f"))], actor=ACTOR).contact_ids[0]
    assert app.score_top(actor=ACTOR) == []
    assert app.rescore_all() == 1
    assert [(c.id, s.score) for c, s in app.score_top(actor=ACTOR)] == [(cid, 10.0)]


def test_score_top_orders_by_score_skips_merged_and_filters_stages(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    ids = app.ingest(
        [
            lead("a", "low@example.com", draft("email.clicked", T0, "a")),
            lead("b", "high@example.com", draft("form.submitted", T0, "b"), draft("call.completed", T0, "b2")),
            lead("c", "mid@example.com", draft("form.submitted", T0, "c")),
            lead("d", "tie@example.com", draft("form.submitted", T0, "d")),
        ],
        actor=ACTOR,
    ).contact_ids
    now = T0 + DAY
    app.rescore_all(now=now)
    top = app.score_top(10, actor=ACTOR)
    assert [c.emails()[0] for c, _ in top] == [
        "high@example.com",
        *sorted(["mid@example.com", "tie@example.com"], key=lambda e: app.resolve(e, actor=ACTOR).id),
        "low@example.com",
    ]
    assert [s.score for _, s in top][0] == pytest.approx(18, abs=0.1)
    assert len(app.score_top(2, actor=ACTOR)) == 2
    app.set_stage(str(ids[2]), "contacted", actor=ACTOR)
    assert [c.id for c, _ in app.score_top(10, stages=["contacted"], actor=ACTOR)] == [ids[2]]
    assert app.score_top(10, stages=["booked_patient"], actor=ACTOR) == []
    with pytest.raises(ValueError, match="stage: unknown stage 'hot'; known: new_lead"):
        app.score_top(stages=["hot"], actor=ACTOR)
    with pytest.raises(ValueError, match="limit"):
        app.score_top(0, actor=ACTOR)
    # every contact shown is an audited read
    entries = app.audit_log(limit=200)
    assert {e.contact_id for e in entries if e.action == "contact.read" and e.purpose == "scoring"} == set(ids)


def test_rescore_stores_the_score_at_now_and_refuses_missing_contacts(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = app.ingest([lead("a", "maria@example.com", draft("form.submitted", T0, "f"))], actor=ACTOR).contact_ids[0]
    record = app.rescore(cid, now=T0)
    assert (record.contact_id, record.score, record.computed_at) == (cid, 10.0, T0)
    with pytest.raises(NotFound):
        app.rescore(uuid.uuid4())


def test_score_explain_of_an_unscored_contact_computes_without_storing(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(scoring={"live": False})
    cid = app.ingest([lead("a", "maria@example.com", draft("form.submitted", T0, "f"))], actor=ACTOR).contact_ids[0]
    _, record = app.score_explain(str(cid), actor=ACTOR)
    assert record.score == 10 and record.reasons[0]["kind"] == "form.submitted"
    assert app.score_top(actor=ACTOR) == []  # nothing was stored


def test_last_touches_read_the_latest_interaction(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = app.ingest(
        [lead("a", "maria@example.com", draft("form.submitted", T0, "f"), draft("email.opened", T0 + DAY, "o"))],
        actor=ACTOR,
    ).contact_ids[0]
    assert app.last_touches([cid, uuid.uuid4()]) == {cid: T0 + DAY}


# --------------------------------------------------------------------------- configuration


def test_unknown_model_lists_the_known_ones(make_app: Callable[..., CareCRM]) -> None:
    with pytest.raises(UnknownComponentError, match=r"unknown scoring model 'ml'; known: points"):
        make_app(scoring={"model": "ml"})


def test_bad_rules_fail_when_the_app_starts(make_app: Callable[..., CareCRM]) -> None:
    with pytest.raises(ConfigError, match=r"scoring\.rules\[1\]\.half_life_days"):
        rules = [{"kind": "form.submitted", "points": 5}, {"kind": "x.y", "points": 1, "half_life_days": -1}]
        make_app(scoring={"rules": rules})
    with pytest.raises(ConfigError, match=r"scoring\.live: must be true or false"):
        make_app(scoring={"live": "yes"})
    with pytest.raises(ConfigError, match=r"scoring\.threshold: unknown option"):
        make_app(scoring={"threshold": 50})


def test_a_third_party_model_is_chosen_by_name_and_scored_live(make_app: Callable[..., CareCRM]) -> None:
    class CountModel(ScoringModel):
        """One point per interaction."""

        model_id = "count"

        def score(self, interactions: Any, now: datetime) -> ScoreResult:
            return ScoreResult(
                score=float(len(interactions)),
                reasons=[ScoreReason(rule="each", kind=i.kind, points=1.0, interaction_id=i.id) for i in interactions],
            )

    class Plugin:
        @hookimpl
        def carecrm_register_scoring_models(self, register: Any) -> None:
            register(CountModel)

    app = make_app()
    app.close()
    settings = settings_from_dict({**app.settings.raw, "scoring": {"model": "count"}}, base_dir=app.settings.base_dir)
    counted = CareCRM(settings, load_entrypoints=False, extra_plugins=[Plugin()])
    try:
        cid = counted.ingest(
            [lead("a", "maria@example.com", draft("email.opened", T0, "o", machine_open=True))], actor=ACTOR
        ).contact_ids[0]
        contact, record = counted.score_explain(str(cid), actor=ACTOR)
        assert (record.model, record.score, contact.score) == ("count", 1.0, 1.0)
    finally:
        counted.close()


def test_a_failing_rescore_is_logged_and_never_undoes_the_ingest(
    make_app: Callable[..., CareCRM], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("scoring is down")

    monkeypatch.setattr(app.scores, "rescore_contacts", broken)
    with caplog.at_level(logging.ERROR, logger="carecrm"):
        report = app.ingest([lead("a", "maria@example.com", draft("form.submitted", T0, "f"))], actor=ACTOR)
    assert report.interactions_added == 1
    assert len(app.timeline(report.contact_ids[0], actor=ACTOR).interactions) == 1
    assert "deferred work carecrm.scoring.rescore failed" in caplog.text
    assert "maria" not in caplog.text


def test_the_docs_example_model_runs(make_app: Callable[..., CareCRM]) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "scoring.md").read_text(encoding="utf-8")
    source = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    module = types.ModuleType("recent_model")
    exec(compile(source, "docs/scoring.md", "exec"), module.__dict__)  # noqa: S102
    app = make_app()
    settings = settings_from_dict({**app.settings.raw, "scoring": {"model": "recent"}}, base_dir=app.settings.base_dir)
    recent = CareCRM(settings, load_entrypoints=False, extra_plugins=[module])
    try:
        now = datetime.now(UTC)
        cid = recent.ingest(
            [
                lead(
                    "a",
                    "maria@example.com",
                    draft("email.opened", now - 40 * DAY, "o"),
                    draft("form.submitted", now, "f"),
                )
            ],
            actor=ACTOR,
        ).contact_ids[0]
        _, record = recent.score_explain(str(cid), actor=ACTOR)
        assert (record.model, record.score, [r["kind"] for r in record.reasons]) == ("recent", 1.0, ["form.submitted"])
    finally:
        recent.close()
