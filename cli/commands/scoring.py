"""``carecrm score``: lead scores (who to call first, why a score is what it is, recompute).

Scores come from the model named in ``[scoring] model`` (default ``points``, rules in
``[[scoring.rules]]``, see docs/scoring.md) and update live as interactions are recorded.
``score top`` and ``score show`` print people's names and phones, so each contact shown
is an audited read with the ``--as`` actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from carecrm.cli.commands.contacts import contact_json
from carecrm.cli.context import json_option, state, value_error_as_usage
from carecrm.cli.output import (
    NONE,
    add_row,
    echo_json,
    format_local,
    json_value,
    print_fields,
    print_table,
    show_id,
    table,
)

if TYPE_CHECKING:
    from carecrm.core.analytics.scoring import ScoreReason
    from carecrm.core.app import CareCRM
    from carecrm.core.model.domain import Contact
    from carecrm.core.model.records import ScoreRecord


def _timezone(the_app: CareCRM, location: str | None) -> str:
    """The IANA time zone of a location (the default location's when unknown)."""
    practice = the_app.settings.practice
    try:
        return practice.location(location).timezone
    except KeyError:
        return practice.default_location.timezone


def _points(value: float) -> str:
    """``12.5`` / ``-10`` / ``+4`` style: up to 2 decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _reasons(record: ScoreRecord) -> list[ScoreReason]:
    from carecrm.core.analytics.scoring import ScoreReason

    return [ScoreReason.from_json(r) for r in record.reasons]


def score_json(record: ScoreRecord) -> dict[str, Any]:
    """A stored score as JSON: ``model``, ``score``, ``computed_at`` (ISO 8601 UTC, Z) and
    ``reasons`` (``rule``, ``kind``, ``points``, ``interaction_id``, ``occurred_at``)."""
    return {
        "model": record.model,
        "score": record.score,
        "computed_at": json_value(record.computed_at),
        "reasons": [r.to_json() for r in _reasons(record)],
    }


@click.group()
def score() -> None:
    """Lead scores: who to call first and why.

    Scores follow the model of [scoring] in carecrm.toml (default "points": points per
    interaction kind, first-time-only and decaying rules) and update as interactions
    arrive. A stored score is as of when it was computed: run `score recompute` daily so
    decaying points fade, and after changing the rules.
    """


@score.command("top")
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", default=20, show_default=True, help="How many contacts."
)
@click.option(
    "--stage",
    "stages",
    multiple=True,
    metavar="STAGE",
    help="Only contacts in this lifecycle stage (e.g. new_lead). Repeatable [default: every stage].",
)
@json_option
@value_error_as_usage
def score_top(limit: int, stages: tuple[str, ...], as_json: bool) -> None:
    """Who to call first: the highest-scored contacts (an audited read of each one shown).

    With --json, a list of {"rank", "contact_id", "name", "phones", "emails", "stage",
    "score", "last_touch", "computed_at"}; times are ISO 8601 UTC ending in Z.
    """
    the_app = state().app
    rows = the_app.score_top(limit, actor=state().actor, stages=list(stages) or None)
    touches = the_app.last_touches([c.id for c, _ in rows])
    if as_json:
        echo_json(
            [
                {
                    "rank": rank,
                    "contact_id": str(contact.id),
                    "name": contact.full_name,
                    "phones": contact.phones(),
                    "emails": contact.emails(),
                    "stage": contact.stage,
                    "score": record.score,
                    "last_touch": json_value(touches.get(contact.id)),
                    "computed_at": json_value(record.computed_at),
                }
                for rank, (contact, record) in enumerate(rows, start=1)
            ]
        )
        return
    t = table(
        "#",
        "name",
        "phone",
        "stage",
        "score",
        "last touch (local)",
        "id",
        title="Who to call first",
        no_wrap=("id", "phone", "stage"),
    )
    for rank, (contact, record) in enumerate(rows, start=1):
        phones = contact.phones()
        add_row(
            t,
            rank,
            contact.full_name,
            phones[0] if phones else None,
            contact.stage,
            _points(record.score),
            format_local(touches.get(contact.id), _timezone(the_app, contact.location)),
            show_id(contact.id),
        )
    print_table(t)


@score.command("show")
@click.argument("ref")
@json_option
def score_show(ref: str, as_json: bool) -> None:
    """A contact's score and every reason for it: the rule, the interaction kind, the
    points it earned (after decay) and when it happened.

    REF is a contact id, an email address or a phone number (any format). With --json,
    {"contact": {...}, "score": {"model", "score", "computed_at", "reasons": [...]}}.
    """
    the_app = state().app
    contact, record = the_app.score_explain(ref, actor=state().actor)
    if as_json:
        echo_json({"contact": contact_json(contact), "score": score_json(record)})
        return
    _explain(the_app, contact, record)


def _explain(the_app: CareCRM, contact: Contact, record: ScoreRecord) -> None:
    tz = _timezone(the_app, contact.location)
    print_fields(
        [
            ("id", contact.id),
            ("name", contact.full_name),
            ("stage", contact.stage),
            ("score", f"{_points(record.score)} ({record.model})"),
            ("computed", format_local(record.computed_at, tz)),
        ],
        title=contact.full_name or str(contact.id),
    )
    t = table("when (local)", "kind", "rule", "points", title="Reasons", no_wrap=("when (local)", "kind"))
    for reason in _reasons(record):
        when = format_local(reason.occurred_at, tz) if reason.occurred_at else NONE
        add_row(t, when, reason.kind, reason.rule, _points(reason.points))
    print_table(t)


@score.command("recompute")
@json_option
def score_recompute(as_json: bool) -> None:
    """Recompute every active contact's score now (after changing [scoring] rules, after a
    bulk import with [scoring] live = false, or daily so decaying points fade)."""
    the_app = state().app
    n = the_app.rescore_all()
    model = the_app.scoring_model.model_id
    if as_json:
        echo_json({"model": model, "rescored": n})
        return
    click.echo(f"rescored {n} contacts with the {model} model")
