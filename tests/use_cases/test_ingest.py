"""The ingest path through the public API: identity rules, idempotency, bad input."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest

from carecrm.core import (
    CareCRM,
    ConfigError,
    CryptoError,
    InteractionDraft,
    LeadEvent,
    SchemaVersionError,
    UnknownComponentError,
    ValidationFailed,
    settings_from_dict,
)
from carecrm.core.errors import BackendUnavailable
from carecrm.core.model.domain import Actor
from carecrm.core.privacy.crypto import KeyRing
from carecrm.core.storage.contract import SCHEMA_VERSION

ACTOR = Actor.parse("tester:admin")

T0 = datetime(2026, 4, 2, 15, 0, tzinfo=UTC)


def lead(
    ref: str,
    *,
    emails=(),
    phones=(),
    first=None,
    last=None,
    full=None,
    kind="form.submitted",
    when=T0,
    confidence="high",
    source="web",
    attrs=None,
) -> LeadEvent:
    return LeadEvent(
        source=source,
        record_ref=ref,
        emails=tuple(emails),
        phones=tuple(phones),
        first_name=first,
        last_name=last,
        full_name=full,
        name_confidence=confidence,
        interactions=(
            InteractionDraft(
                kind=kind, occurred_at=when, idempotency_key=f"{kind}:{ref}", channel="web", attributes=attrs or {}
            ),
        ),
    )


def test_three_phone_formats_are_one_person(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    r = app.ingest(
        [
            lead("a", phones=["+1 (312) 555-0142"], first="Maria", last="Placeholder"),
            lead("b", phones=["312.555.0142"], first="Maria"),
            lead("c", phones=["+13125550142"]),
        ],
        actor=ACTOR,
    )
    assert r.contacts_created == 1 and r.interactions_added == 3
    assert len(set(r.contact_ids)) == 1
    contact = app.resolve("(312) 555-0142", actor=ACTOR)
    assert contact.phones() == ["+13125550142"] and contact.full_name == "Maria Placeholder"
    assert [i.kind for i in app.timeline(contact.id, actor=ACTOR).interactions] == ["form.submitted"] * 3


def test_household_sharing_a_phone_is_two_contacts_for_review(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    app.ingest(
        [
            lead(
                "m",
                phones=["312.555.0142"],
                emails=["maria.placeholder@example.com"],
                first="Maria",
                last="Placeholder",
            )
        ],
        actor=ACTOR,
    )
    r = app.ingest([lead("d", phones=["(312) 555-0142"], first="Sofia", last="Placeholder")], actor=ACTOR)
    assert r.contacts_created == 1 and r.review_pairs == 1
    pairs = app.review_pairs()
    assert len(pairs) == 1 and pairs[0][2].startswith("names_disagree")
    assert len(app.find_contacts(phone="+13125550142", actor=ACTOR)) == 2
    # a later event from the daughter with her name joins her, not her mother
    r = app.ingest([lead("d2", phones=["3125550142"], first="Sofia")], actor=ACTOR)
    assert r.contacts_created == 0
    sofia = app.find_contacts(name="Sofia Placeholder", actor=ACTOR)
    assert len(sofia) == 1 and r.contact_ids == [sofia[0].id]


def test_caller_id_name_never_splits_or_overwrites(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    app.ingest([lead("m", phones=["312.555.0142"], first="Maria", last="Placeholder")], actor=ACTOR)
    r = app.ingest(
        [
            lead(
                "call",
                phones=["(312) 555-0142"],
                full="SKYPE CALLER",
                confidence="low",
                kind="call.completed",
                source="callrail",
            )
        ],
        actor=ACTOR,
    )
    assert r.contacts_created == 0 and r.review_pairs == 0
    assert app.resolve("+13125550142", actor=ACTOR).full_name == "Maria Placeholder"


def test_email_to_a_phone_to_b_joins_a_and_flags_the_pair(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    a = app.ingest([lead("a", emails=["ann.placeholder@example.com"], first="Ann")], actor=ACTOR).contact_ids[0]
    b = app.ingest([lead("b", phones=["+13125550177"], first="Ann")], actor=ACTOR).contact_ids[0]
    r = app.ingest(
        [lead("c", emails=["ann.placeholder@example.com"], phones=["+13125550177"], first="Ann")], actor=ACTOR
    )
    assert r.contact_ids == [a] and r.review_pairs == 1
    assert {frozenset(p[:2]) for p in app.review_pairs()} == {frozenset((a, b))}


def test_reingest_changes_nothing(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    events = [lead("a", emails=["x.placeholder@example.com"], first="X")]
    app.ingest(events, actor=ACTOR)
    before = app.counts()
    r = app.ingest(events, actor=ACTOR)
    assert r.duplicates == 1 and r.interactions_added == 0 and r.contacts_created == 0
    after = app.counts()
    assert {k: v for k, v in after.items()} == before


def test_record_without_identity_is_quarantined_and_the_rest_goes_in(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    r = app.ingest(
        [
            lead("ok1", emails=["one.placeholder@example.com"]),
            lead("none", first="Nobody"),
            lead("bad-email", emails=["not-an-email"]),
            lead("ok2", phones=["+13125550199"]),
        ],
        actor=ACTOR,
    )
    assert r.contacts_created == 2
    assert [(q.record, q.field) for q in r.quarantined] == [("none", "identity"), ("bad-email", "identity")]
    assert "not-an-email" not in " ".join(q.message() for q in r.quarantined + [])
    assert any("email[0]" in w for w in r.warnings)


def test_implied_stage_moves_and_a_persons_move_wins(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = app.ingest([lead("a", emails=["p.placeholder@example.com"])], actor=ACTOR).contact_ids[0]
    app.ingest(
        [
            lead(
                "appt",
                emails=["p.placeholder@example.com"],
                kind="appointment.booked",
                when=datetime(2026, 5, 1, tzinfo=UTC),
                attrs={"appointment_type": "consult"},
            )
        ],
        actor=ACTOR,
    )
    assert app.get_contact(cid, actor=ACTOR).stage == "consult_scheduled"
    history = app.stage_history(cid)
    assert [h.to_stage for h in history] == ["new_lead", "consult_scheduled"]
    assert history[-1].implied_by is not None
    app.set_stage(cid, "nurture", reason="not ready", actor=ACTOR)
    # an older interaction arriving late does not override the person's move
    app.ingest(
        [
            lead(
                "late",
                emails=["p.placeholder@example.com"],
                kind="appointment.attended",
                when=datetime(2026, 5, 2, tzinfo=UTC),
                attrs={"appointment_type": "consult"},
            )
        ],
        actor=ACTOR,
    )
    assert app.get_contact(cid, actor=ACTOR).stage == "nurture"


def test_unknown_source_lists_known(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(
        sources={
            "typeform": {
                "connector": "mapped",
                "kind": "form.submitted",
                "occurred_at": "at",
                "fields": {"email": "email"},
            }
        }
    )
    with pytest.raises(UnknownComponentError, match="known: .*typeform"):
        app.ingest_payloads("nosuch", [], actor=ACTOR)


def test_config_naming_a_missing_plugin(make_app: Callable[..., CareCRM]) -> None:
    base = make_app()
    with pytest.raises(UnknownComponentError, match="unknown plugin 'carecrm-nosuch'"):
        CareCRM(
            settings_from_dict(
                {
                    **base.settings.raw,
                    "plugins": {"enabled": ["carecrm-nosuch"]},
                    "storage": {"url": base.settings.storage_url},
                }
            ),
            load_entrypoints=False,
        )


def test_wrong_or_missing_key(make_app: Callable[..., CareCRM], tmp_path: Path) -> None:
    app = make_app()
    app.ingest([lead("a", emails=["k.placeholder@example.com"])], actor=ACTOR)
    before = app.counts()
    app.close()
    other = CareCRM(app.settings, keys=KeyRing.generate(), load_entrypoints=False)
    with pytest.raises(CryptoError, match="do not match"):
        other.counts()
    missing = settings_from_dict(
        {"storage": {"url": app.settings.storage_url}, "keys": {"file": "nope.keys"}}, base_dir=tmp_path
    )
    with pytest.raises(CryptoError, match="not found"):
        CareCRM(missing, load_entrypoints=False).counts()
    again = CareCRM(app.settings, keys=app.keys, load_entrypoints=False)
    assert again.counts() == before
    again.close()


def test_unopenable_database_url(tmp_path: Path) -> None:
    KeyRing.generate().write_file(tmp_path / "k")
    for url in (f"sqlite:///{tmp_path}/no/such/dir/x.db", "postgresql://nobody@127.0.0.1:1/none"):
        settings = settings_from_dict({"storage": {"url": url}, "keys": {"file": "k"}}, base_dir=tmp_path)
        app = CareCRM(settings, load_entrypoints=False)
        with pytest.raises(BackendUnavailable) as info:
            app.counts()
        assert "nobody" not in str(info.value) or "@" not in str(info.value)


def test_database_from_a_newer_schema_is_refused(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    with app.storage.unit_of_work() as uow:
        uow.meta.set("schema_version", str(SCHEMA_VERSION + 1))
        uow.commit()
    app.close()
    again = CareCRM(app.settings, keys=app.keys, load_entrypoints=False)
    with pytest.raises(SchemaVersionError, match="newer"):
        again.counts()


def test_bad_config_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="time zone"):
        settings_from_dict(
            {"storage": {"url": "sqlite://"}, "practice": {"locations": [{"name": "x", "timezone": "Mars/Olympus"}]}}
        )
    with pytest.raises(ConfigError, match=r"\[storage\] url"):
        settings_from_dict({})
    with pytest.raises(ConfigError, match="collect"):
        settings_from_dict({"storage": {"url": "sqlite://"}, "collect": {"ssn": True}})
    path = tmp_path / "carecrm.toml"
    path.write_text("[storage\nurl=1")
    from carecrm.core import load_settings

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)
    assert json.dumps({}) == "{}" and os.sep


def test_free_text_service_interest_is_never_stored_in_clear(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()  # service lines: acne, botox, mohs
    e = lead("si", emails=["si.placeholder@example.com"])
    r = app.ingest([attrs.evolve(e, service_interest="I think I have skin cancer")], actor=ACTOR)
    assert r.contacts_created == 1 and any("service_interest" in w for w in r.warnings)
    assert app.get_contact(r.contact_ids[0], actor=ACTOR).service_interest is None
    r = app.ingest(
        [attrs.evolve(lead("si2", emails=["si.placeholder@example.com"]), service_interest="ACNE")], actor=ACTOR
    )
    assert app.get_contact(r.contact_ids[0], actor=ACTOR).service_interest == "acne"
    with pytest.raises(ValidationFailed, match="service_interest"):
        app.add_contact(
            first_name="Pat", emails=["pat.placeholder@example.com"], service_interest="patient has HIV", actor=ACTOR
        )
    with pytest.raises(ValidationFailed, match="email"):
        app.add_contact(first_name="Pat", emails=["not-an-email"], phones=["+13125550111"], actor=ACTOR)
    assert app.find_contacts(phone="+13125550111", actor=ACTOR) == []  # nothing half-stored


def test_free_text_stage_reason_is_kept_encrypted(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = app.ingest([lead("sr", emails=["sr.placeholder@example.com"])], actor=ACTOR).contact_ids[0]
    app.set_stage(cid, "lost", reason="worried about cost after her diagnosis", actor=ACTOR)
    assert app.stage_history(cid)[-1].reason == "free_text"
    last = app.timeline(cid, actor=ACTOR).interactions[-1]
    assert last.kind == "stage.changed" and last.body == "worried about cost after her diagnosis"
    app.set_stage(cid, "contacted", reason="called_back", actor=ACTOR)
    assert app.stage_history(cid)[-1].reason == "called_back"


def test_contacts_get_the_default_location(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    r = app.ingest([lead("loc", emails=["loc.placeholder@example.com"])], actor=ACTOR)
    contact = app.get_contact(r.contact_ids[0], actor=ACTOR)
    assert contact.location == "downtown"
    assert app.timeline(contact.id, actor=ACTOR).interactions[0].location == "downtown"


@pytest.mark.parametrize("cnam", ["T-MOBILE", "V123456789", "WIRELESS CALLER", "CHICAGO IL"])
def test_carrier_and_device_names_do_not_split(make_app: Callable[..., CareCRM], cnam: str) -> None:
    app = make_app()
    app.ingest([lead("t", phones=["+13125550160"], first="Tom", last="Reed")], actor=ACTOR)
    r = app.ingest([lead("c", phones=["(312) 555-0160"], full=cnam, kind="call.completed")], actor=ACTOR)
    assert r.contacts_created == 0 and r.review_pairs == 0


def test_bad_region_in_config() -> None:
    with pytest.raises(ConfigError, match="region"):
        settings_from_dict(
            {"storage": {"url": "sqlite://"}, "practice": {"locations": [{"name": "x", "region": "XX"}]}}
        )


def test_cities_are_stored_in_one_casing(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    e = attrs.evolve(lead("ci", emails=["ci.placeholder@example.com"]), city="  SAINT   louis ")
    cid = app.ingest([e], actor=ACTOR).contact_ids[0]
    assert app.get_contact(cid, actor=ACTOR).city == "Saint Louis"
