"""``carecrm contacts``, ``carecrm timeline`` and ``carecrm note``: people and their history.

These commands show a person's own data to the person using the CRM (that is their
point); every such read is written to the audit log with the ``--as`` actor.  A REF is a
contact id, an email address or a phone number in any format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from carecrm.cli.commands.tasks import task_json
from carecrm.cli.context import json_option, state, value_error_as_usage
from carecrm.cli.output import (
    NONE,
    add_row,
    compact_json,
    console,
    echo_json,
    format_duration,
    format_local,
    format_utc,
    json_value,
    print_fields,
    print_table,
    show_id,
    styled,
    table,
)
from carecrm.core.model.timeutil import utcnow

if TYPE_CHECKING:
    from rich.text import Text

    from carecrm.core.app import CareCRM
    from carecrm.core.model.domain import Contact, Interaction, Note, StageChange
    from carecrm.core.pipeline.speed_to_lead import FirstResponse

# --------------------------------------------------------------------------- JSON shapes


def contact_json(contact: Contact) -> dict[str, Any]:
    """A contact as JSON: every field, ``full_name`` and its identities."""
    out = dict(json_value(contact))
    out["full_name"] = contact.full_name
    return out


def interaction_json(item: Interaction) -> dict[str, Any]:
    """An interaction as JSON: ``kind``, ``occurred_at`` (ISO 8601 UTC, Z), ``channel``,
    ``source``, ``campaign`` and ``channel_group`` (from the touchpoint), ``direction``,
    the whole ``touchpoint`` (set fields only), ``attributes`` and ``body``."""
    return {
        "id": str(item.id),
        "kind": item.kind,
        "occurred_at": json_value(item.occurred_at),
        "recorded_at": json_value(item.recorded_at),
        "channel": item.channel,
        "direction": item.direction,
        "source": item.source,
        "campaign": item.touchpoint.campaign,
        "channel_group": item.touchpoint.channel_group,
        "location": item.location,
        "touchpoint": compact_json(json_value(item.touchpoint)),
        "attributes": json_value(item.attributes),
        "body": item.body,
        "actor": item.actor,
    }


def stage_change_json(change: StageChange) -> dict[str, Any]:
    """A stage change as JSON."""
    return dict(json_value(change))


def note_json(note: Note) -> dict[str, Any]:
    """A note as JSON."""
    return dict(json_value(note))


def speed_to_lead_json(first: FirstResponse | None) -> dict[str, Any] | None:
    """Speed to lead as JSON: ``first_inbound_at`` and ``first_outbound_at`` (ISO 8601 UTC,
    Z; the latter null while unanswered), ``business_seconds`` and ``wall_clock_seconds``
    (null while unanswered), ``location``; null when the contact never reached out."""
    return None if first is None else dict(json_value(first))


# --------------------------------------------------------------------------- rendering


def _timezone(the_app: CareCRM, location: str | None) -> str:
    """The IANA time zone of a location (the default location's when unknown)."""
    practice = the_app.settings.practice
    try:
        return practice.location(location).timezone
    except KeyError:
        return practice.default_location.timezone


def _identity_text(contact: Contact, kind: str) -> str:
    return ", ".join(i.display or i.value for i in contact.identities if i.kind == kind) or NONE


def _contacts_table(found: list[Contact]) -> None:
    columns = ("id", "name", "emails", "phones", "stage", "created (UTC)")
    t = table(*columns, title="Contacts", no_wrap=("id", "phones", "stage"))
    for c in found:
        emails, phones = _identity_text(c, "email"), _identity_text(c, "phone")
        add_row(t, show_id(c.id), c.full_name, emails, phones, c.stage, c.created_at)
    print_table(t)


def _speed_text(first: FirstResponse | None, tz: str) -> Text:
    """The "speed to lead" line: business time to the first answer, or what is missing."""
    if first is None:
        return styled(f"{NONE} (never reached out)", "dim")
    if first.first_outbound_at is None:
        return styled(f"awaiting a first response since {format_local(first.first_inbound_at, tz)}", "bold")
    return styled(
        f"{format_duration(first.business_seconds)} of business hours "
        f"({format_duration(first.wall_clock_seconds)} elapsed; first reached out "
        f"{format_local(first.first_inbound_at, tz)}, first answered {format_local(first.first_outbound_at, tz)})"
    )


def _summary(the_app: CareCRM, contact: Contact, first: FirstResponse | None = None) -> None:
    tz = _timezone(the_app, contact.location)
    print_fields(
        [
            ("id", contact.id),
            ("name", contact.full_name),
            ("stage", contact.stage),
            ("in stage since", format_local(contact.stage_changed_at or contact.created_at, tz)),
            ("service interest", contact.service_interest),
            ("location", contact.location),
            ("city", contact.city),
            ("owner", contact.owner),
            ("score", contact.score),
            ("first source", contact.first_source),
            ("speed to lead", _speed_text(first, tz)),
            ("created", f"{format_utc(contact.created_at)} ({format_local(contact.created_at, tz)})"),
        ],
        title=contact.full_name or str(contact.id),
    )


#: Attributes of vendors' and carecrm's own bookkeeping, shown on the timeline only with
#: ``--verbose`` (they are all in ``--json``): vendors' event and message ids, raw event
#: names and payload formats, tracking lines, and attributes repeated in the "what"
#: column (SendGrid's categories are the campaign).  Any attribute named ``id`` or ending
#: in ``_id`` / ``_ids`` is technical too (``sg_event_id``, ``site_id``, ``task_id``).
TECHNICAL_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "attempt",
        "callsource",
        "categories",
        "destination_number",
        "event",
        "first_call",
        "format",
        "occurred_at_source",
        "recording_available",
        "referrer_medium",
        "response",
        "smtp_status",
        "tls",
        "tracking_number",
    }
)


def is_technical(name: str) -> bool:
    """Whether an interaction attribute is bookkeeping shown only with ``timeline --verbose``
    (see :data:`TECHNICAL_ATTRIBUTES`)."""
    return name in TECHNICAL_ATTRIBUTES or name == "id" or name.endswith(("_id", "_ids"))


def _details(item: Interaction, *, verbose: bool = False) -> Text:
    """The timeline's details cell: a stage move as ``from → to``, the attributes (without
    the technical ones unless ``verbose``), then the body (the person's message, a note,
    a task) whole, line breaks kept."""
    attrs_ = dict(item.attributes)
    parts: list[str] = []
    if item.kind == "stage.changed" and "to_stage" in attrs_:
        parts.append(f"{attrs_.pop('from_stage', None) or NONE} → {attrs_.pop('to_stage')}")
    shown = [
        f"{k}={v}"
        for k, v in sorted(attrs_.items())
        if v not in (None, "", [], {}) and (verbose or not is_technical(k))
    ]
    if shown:
        parts.append("; ".join(shown))
    if item.body and item.body.strip():
        parts.append(item.body.strip())
    return styled("\n".join(parts)) if parts else styled(NONE, "dim")


def _what(item: Interaction) -> Text:
    """The "what" cell: the kind, then channel, source and campaign joined
    (``form.submitted`` / ``web · typeform · spring``)."""
    via = " · ".join(p for p in (item.channel, item.source, item.touchpoint.campaign) if p)
    return styled(f"{item.kind}\n{via}" if via else item.kind)


# --------------------------------------------------------------------------- contacts


@click.group()
def contacts() -> None:
    """Add, find and show contacts (leads and patients)."""


@contacts.command("add")
@click.option("--first-name", help="Given name.")
@click.option("--last-name", help="Family name.")
@click.option("--email", "emails", multiple=True, metavar="EMAIL", help="An email address. Repeatable.")
@click.option("--phone", "phones", multiple=True, metavar="PHONE", help="A phone number, any format. Repeatable.")
@click.option("--service-interest", metavar="CODE", help="Service-line code (e.g. botox).")
@click.option("--location", metavar="NAME", help="The practice location [default: the first one].")
@click.option("--city", help="City.")
@click.option("--postal-code", help="Postal code.")
@json_option
def contacts_add(
    first_name: str | None,
    last_name: str | None,
    emails: tuple[str, ...],
    phones: tuple[str, ...],
    service_interest: str | None,
    location: str | None,
    city: str | None,
    postal_code: str | None,
    as_json: bool,
) -> None:
    """Add a contact by hand (a walk-in, a phone call).

    At least one --email or --phone is needed. The contact is matched like any lead: if
    an email or phone already belongs to someone with the same name, that contact is
    shown instead of a new one being made.
    """
    if not emails and not phones:
        raise click.UsageError("give at least one --email or --phone")
    the_app = state().app
    if location is not None:
        names = [loc.name for loc in the_app.settings.practice.locations]
        if location not in names:
            raise click.BadParameter(f"unknown location; known: {', '.join(names)}", param_hint="--location")
    started = utcnow()
    contact = the_app.add_contact(
        actor=state().actor,
        first_name=first_name,
        last_name=last_name,
        emails=emails,
        phones=phones,
        service_interest=service_interest,
        location=location,
        city=city,
        postal_code=postal_code,
    )
    created = contact.created_at >= started
    if as_json:
        echo_json({"created": created, "contact": contact_json(contact)})
        return
    verb = "created" if created else "matched an existing"
    click.echo(f"{verb} contact {contact.id} (stage {contact.stage}, {len(contact.identities)} identities)")


@contacts.command("find")
@click.option("--email", metavar="EMAIL", help="Exact email address (case ignored).")
@click.option("--phone", metavar="PHONE", help="Phone number in any format (read in the first location's region).")
@click.option("--name", metavar="NAME", help="Full name or family name (case and accents ignored).")
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", default=50, show_default=True, help="At most this many."
)
@json_option
def contacts_find(email: str | None, phone: str | None, name: str | None, limit: int, as_json: bool) -> None:
    """Find contacts by email, phone or name (an audited look-up)."""
    if not (email or phone or name):
        raise click.UsageError("give --email, --phone or --name")
    found = state().app.find_contacts(actor=state().actor, email=email, phone=phone, name=name, limit=limit)
    if as_json:
        echo_json([contact_json(c) for c in found])
        return
    _contacts_table(found)


@contacts.command("show")
@click.argument("ref")
@json_option
def contacts_show(ref: str, as_json: bool) -> None:
    """A contact's identities, stage and stage history, possible duplicates under review
    and notes. REF is a contact id, an email address or a phone number (any format)."""
    the_app = state().app
    contact = the_app.resolve(ref, actor=state().actor)
    history = the_app.stage_history(contact.id)
    pairs = [(b if a == contact.id else a, reason) for a, b, reason in the_app.review_pairs(contact.id)]
    notes = the_app.notes(contact.id, actor=state().actor)
    first = the_app.first_response(contact.id)
    open_tasks = [item for item, _ in the_app.tasks(actor=state().actor, contact=contact.id, status="open")]
    if as_json:
        echo_json(
            {
                "contact": contact_json(contact),
                "stage_history": [stage_change_json(h) for h in history],
                "review": [{"contact_id": str(other), "reason": reason} for other, reason in pairs],
                "notes": [note_json(n) for n in notes],
                "speed_to_lead_seconds": first.business_seconds if first is not None else None,
                "speed_to_lead": speed_to_lead_json(first),
                "tasks": [task_json(item) for item in open_tasks],
            }
        )
        return
    _summary(the_app, contact, first)
    t = table("kind", "value", "as given", "valid", "verified", "source", title="Identities")
    for i in contact.identities:
        add_row(t, i.kind, i.value, i.display if i.display != i.value else None, i.valid, i.verified, i.source)
    print_table(t)
    t = table("changed (UTC)", "from", "to", "by", "reason", title="Stage history")
    for h in history:
        add_row(t, h.changed_at, h.from_stage, h.to_stage, h.actor or ("implied" if h.implied_by else None), h.reason)
    print_table(t)
    t = table(
        "other contact",
        "reason",
        title="Possible duplicates or household members under review",
        no_wrap=("other contact",),
    )
    for other, reason in pairs:
        add_row(t, show_id(other), reason)
    print_table(t)
    t = table("written (UTC)", "by", "note", title="Notes")
    for n in notes:
        add_row(t, n.created_at, n.author, n.text)
    print_table(t)
    tz = _timezone(the_app, contact.location)
    t = table("id", "due (local)", "assignee", "task", title="Open tasks", no_wrap=("id", "due (local)"))
    for item in open_tasks:
        add_row(t, show_id(item.id), format_local(item.due_at, tz) if item.due_at else None, item.assignee, item.text)
    print_table(t)


@contacts.command("assign")
@click.argument("ref")
@click.argument("name", required=False)
@click.option("--clear", is_flag=True, help="Leave the contact without an owner.")
@json_option
@value_error_as_usage
def contacts_assign(ref: str, name: str | None, clear: bool, as_json: bool) -> None:
    """Make NAME (a coordinator) the owner of a contact, or --clear the owner.

    REF is a contact id, an email address or a phone number (any format). The change is
    recorded in the audit log (not on the timeline: it is not something that happened
    with the person).
    """
    if clear == (name is not None):
        raise click.UsageError("give NAME or --clear")
    contact = state().app.assign(ref, None if clear else name, actor=state().actor)
    if as_json:
        echo_json({"contact_id": str(contact.id), "owner": contact.owner})
        return
    click.echo(f"contact {contact.id}: owner {contact.owner or '(none)'}")


# --------------------------------------------------------------------------- timeline


@click.command()
@click.argument("ref")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    default=100,
    show_default=True,
    help="At most this many interactions.",
)
@click.option(
    "--verbose",
    is_flag=True,
    default=False,
    help="Also show vendors' technical attributes (event and message ids such as sg_event_id, "
    "site_id, tracking lines, raw event names) and the whole contact id.",
)
@json_option
def timeline(ref: str, limit: int, verbose: bool, as_json: bool) -> None:
    """A person's interactions, oldest first (an audited read).

    REF is a contact id (whole or short), an email address or a phone number (any
    format). Each interaction shows when it happened (UTC and the location's local
    time), what it was and through which channel, source and campaign, and the person's
    own message, note or task text whole. With --json, one object: {"contact": {...},
    "interactions": [...], "has_more": bool}, every attribute included; times are ISO
    8601 UTC ending in Z.
    """
    the_app = state().app
    tl = the_app.timeline(ref, actor=state().actor, limit=limit)
    if as_json:
        echo_json(
            {
                "contact": contact_json(tl.contact),
                "interactions": [interaction_json(i) for i in tl.interactions],
                "has_more": tl.next_cursor is not None,
            }
        )
        return
    contact = tl.contact
    default_tz = _timezone(the_app, contact.location)
    shown_id = show_id(contact.id, full=True if verbose else None)
    title = f"Timeline of {contact.full_name or 'contact'} ({shown_id}), stage {contact.stage}; local time {default_tz}"
    t = table("when (UTC / local)", "what (via)", "details", title=title, no_wrap=("when (UTC / local)",))
    for i in tl.interactions:
        tz = _timezone(the_app, i.location) if i.location else default_tz
        when = f"{format_utc(i.occurred_at)}\n{format_local(i.occurred_at, tz)}"
        add_row(t, when, _what(i), _details(i, verbose=verbose))
    if not t.row_count:
        click.echo(f"{title}: no interactions")
        return
    console().print(t)
    if tl.next_cursor is not None:
        click.echo(f"(more interactions: raise --limit above {limit})")


# --------------------------------------------------------------------------- notes


@click.group()
def note() -> None:
    """Coordinators' notes about a contact (encrypted at rest)."""


@note.command("add")
@click.argument("ref")
@click.argument("text")
@value_error_as_usage
def note_add(ref: str, text: str) -> None:
    """Add a note to a contact; it also appears on the timeline as note.added.

    REF is a contact id, an email address or a phone number (any format).
    """
    added = state().app.add_note(ref, text, actor=state().actor)
    click.echo(f"note {added.id} added to contact {added.contact_id}")
