"""``carecrm segment``: select contacts by stage, service interest, place, score and recent
interactions; preview, save, list, show and delete segments.

The flags make a spec for the configured segment builder (``[segments] builder``, default
``basic``); the storage backend answers it with one query.  A preview prints the count and
the first contacts with their names: each contact shown is an audited read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from carecrm.cli.context import json_option, state, value_error_as_usage
from carecrm.cli.output import add_row, echo_json, format_utc, json_value, print_fields, print_table, show_id, table

if TYPE_CHECKING:
    from carecrm.core.analytics.segments_service import SavedSegment, SegmentPreview
    from carecrm.core.model.domain import Contact

F = TypeVar("F", bound=Callable[..., Any])


def _parse_had(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[dict[str, Any]]:
    """``KIND[,KIND...]:DAYS`` → ``{"kinds": [...], "within_days": DAYS}``."""
    out = []
    for text in values:
        kinds, sep, days = text.rpartition(":")
        if not sep or not kinds.strip() or not days.strip().isdigit():
            raise click.BadParameter(
                "expected KIND:DAYS, e.g. email.opened:90 (several kinds: email.opened,email.clicked:30)",
                ctx=ctx,
                param=param,
            )
        out.append({"kinds": [k.strip() for k in kinds.split(",") if k.strip()], "within_days": int(days)})
    return out


def spec_options(func: F) -> F:
    """The filter flags shared by ``segment preview`` and ``segment save``."""
    options = [
        click.option(
            "--stage", "stage", multiple=True, metavar="STAGE", help="In this lifecycle stage. Repeatable: any of them."
        ),
        click.option(
            "--service-interest",
            "service_interest",
            multiple=True,
            metavar="CODE",
            help="Interested in this service line (e.g. acne). Repeatable: any of them.",
        ),
        click.option("--location", metavar="NAME", help="At this practice location (also the time zone of --had)."),
        click.option(
            "--city",
            "city",
            multiple=True,
            metavar="CITY",
            help="In this city (exact, as stored). Repeatable: any of them.",
        ),
        click.option(
            "--postal-prefix",
            metavar="PREFIX",
            help="Postal code starting with this (only the first 3 digits of a US ZIP are stored in clear).",
        ),
        click.option("--score-min", type=float, metavar="N", help="Lead score at least N."),
        click.option("--score-max", type=float, metavar="N", help="Lead score at most N."),
        click.option(
            "--had",
            "had",
            multiple=True,
            metavar="KIND:DAYS",
            callback=_parse_had,
            help="Had an interaction of KIND (comma-separated kinds: any of them) within DAYS days, counted "
            "in local calendar days of the practice's time zone (today and the DAYS days before). "
            "Repeatable: all must hold.",
        ),
        click.option("--owner", metavar="NAME", help="Assigned to this coordinator."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _spec(
    stage: tuple[str, ...],
    service_interest: tuple[str, ...],
    location: str | None,
    city: tuple[str, ...],
    postal_prefix: str | None,
    score_min: float | None,
    score_max: float | None,
    had: list[dict[str, Any]],
    owner: str | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "stage": list(stage),
        "service_interest": list(service_interest),
        "location": location,
        "city": list(city),
        "postal_prefix": postal_prefix,
        "score_min": score_min,
        "score_max": score_max,
        "had": had,
        "owner": owner,
    }
    return {k: v for k, v in spec.items() if v is not None and v != []}


def _limit_option(func: F) -> F:
    return click.option(
        "--limit",
        type=click.IntRange(min=0),
        metavar="N",
        default=20,
        show_default=True,
        help="Contacts to show (0: the count only).",
    )(func)


# --------------------------------------------------------------------------- rendering


def _contact_row(contact: Contact) -> dict[str, Any]:
    return {
        "id": str(contact.id),
        "name": contact.full_name,
        "stage": contact.stage,
        "service_interest": contact.service_interest,
        "location": contact.location,
        "city": contact.city,
        "score": contact.score,
        "owner": contact.owner,
        "created_at": json_value(contact.created_at),
    }


def _saved_json(saved: SavedSegment) -> dict[str, Any]:
    return dict(json_value(saved))


def _unstructure(criteria: Any) -> dict[str, Any]:
    from carecrm.core.analytics.criteria import unstructure

    return unstructure(criteria)


def _preview_json(preview: SegmentPreview) -> dict[str, Any]:
    return {
        "segment": _saved_json(preview.segment) if preview.segment else None,
        "count": preview.count,
        "shown": len(preview.contacts),
        "at": json_value(preview.at),
        "criteria": _unstructure(preview.criteria),
        "contacts": [_contact_row(c) for c in preview.contacts],
    }


def _print_preview(preview: SegmentPreview, description: str) -> None:
    noun = "contact" if preview.count == 1 else "contacts"
    click.echo(f"{preview.count} {noun} match: {description} (as of {format_utc(preview.at)})")
    if not preview.contacts:
        return
    t = table(
        "id",
        "name",
        "stage",
        "service interest",
        "location",
        "city",
        "score",
        "owner",
        title=None,
        no_wrap=("id", "stage"),
    )
    for c in preview.contacts:
        add_row(t, show_id(c.id), c.full_name, c.stage, c.service_interest, c.location, c.city, c.score, c.owner)
    print_table(t)
    if preview.count > len(preview.contacts):
        click.echo(f"(showing the first {len(preview.contacts)}; raise --limit to see more)")


# --------------------------------------------------------------------------- commands


@click.group()
def segment() -> None:
    """Segments: contacts selected by stage, service interest, place, score and recent
    interactions (one database query; nothing personal is filtered on)."""


@segment.command("preview")
@spec_options
@_limit_option
@json_option
@value_error_as_usage
def segment_preview(limit: int, as_json: bool, **flags: Any) -> None:
    """How many contacts match the flags, and the first of them (each contact shown is
    an audited read). With no flag: every active contact.

    Flags combine with AND; a repeated --stage, --service-interest or --city means any of
    them. An unknown stage, service line, location or interaction kind is refused with the
    known ones (exit status 2).
    """
    the_app = state().app
    spec = _spec(**flags)
    preview = the_app.segment_preview(spec, actor=state().actor, limit=limit)
    if as_json:
        echo_json(_preview_json(preview))
        return
    _print_preview(preview, the_app.segment_builder().describe(spec))


@segment.command("save")
@click.argument("name")
@spec_options
@click.option("--replace", is_flag=True, help="Replace a saved segment of the same name.")
@value_error_as_usage
def segment_save(name: str, replace: bool, **flags: Any) -> None:
    """Save the flags as segment NAME. "Within DAYS" stays relative: the window moves with
    the day the segment is used on."""
    saved = state().app.segment_save(name, _spec(**flags), actor=state().actor, replace=replace)
    click.echo(f"segment {saved.name!r} saved: {saved.description}")


@segment.command("list")
@json_option
def segment_list(as_json: bool) -> None:
    """Saved segments with what they select."""
    saved = state().app.segment_list()
    if as_json:
        echo_json([_saved_json(s) for s in saved])
        return
    t = table("name", "selects", "updated (UTC)", "by", title="Segments")
    for s in saved:
        add_row(t, s.name, s.description, s.updated_at, s.created_by)
    print_table(t)


@segment.command("show")
@click.argument("name")
@_limit_option
@json_option
@value_error_as_usage
def segment_show(name: str, limit: int, as_json: bool) -> None:
    """Preview saved segment NAME: its definition, how many contacts it selects today and
    the first of them (each contact shown is an audited read)."""
    preview = state().app.segment_show(name, actor=state().actor, limit=limit)
    if as_json:
        echo_json(_preview_json(preview))
        return
    saved = preview.segment
    assert saved is not None
    print_fields(
        [("builder", saved.builder or "(filter tree)"), ("updated", saved.updated_at), ("by", saved.created_by)],
        title=f"Segment {saved.name}",
    )
    _print_preview(preview, saved.description)


@segment.command("delete")
@click.argument("name")
def segment_delete(name: str) -> None:
    """Delete saved segment NAME (the contacts are not touched)."""
    state().app.segment_delete(name, actor=state().actor)
    click.echo(f"segment {name!r} deleted")
