"""``carecrm task`` (a coordinator's to-dos about contacts) and ``carecrm log`` (calls, texts
and emails made by hand).

Times typed on the command line (``--due``, ``--at``) are read in the time zone of the
contact's location (see :mod:`carecrm.core.model.when`: ``2025-10-06 09:00``, ``+2h``,
``tomorrow 09:00``) and stored in UTC.  "Mine" is the acting ``--as`` name.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from carecrm.cli.context import json_option, state, value_error_as_usage
from carecrm.cli.output import NONE, add_row, echo_json, format_local, json_value, print_table, show_id, styled, table
from carecrm.core.model.timeutil import utcnow

if TYPE_CHECKING:
    from carecrm.core.app import CareCRM
    from carecrm.core.model.domain import Interaction, Task
    from carecrm.core.pipeline.coordination import ContactSummary

# --------------------------------------------------------------------------- JSON shapes


def task_json(task: Task, contact: ContactSummary | None = None, *, now: datetime | None = None) -> dict[str, Any]:
    """A task as JSON: every field of :class:`~carecrm.core.model.domain.Task` (times ISO 8601
    UTC ending in Z), ``overdue`` (open and due before ``now``) and, when given, the
    ``contact`` it is about (id, full name, stage, owner, location)."""
    out = dict(json_value(task))
    when = now or utcnow()
    out["overdue"] = task.status == "open" and task.due_at is not None and task.due_at < when
    if contact is not None:
        out["contact"] = {
            "id": str(contact.id),
            "full_name": contact.full_name,
            "stage": contact.stage or None,
            "owner": contact.owner,
            "location": contact.location,
        }
    return out


def _timezone(the_app: CareCRM, location: str | None) -> str:
    return the_app.location_of(location).timezone


def _short_local(value: datetime, timezone: str) -> str:
    """``2025-10-06 09:00 CDT``: a due time to the minute in ``timezone``."""
    local = value.astimezone(ZoneInfo(timezone))
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or timezone)


# --------------------------------------------------------------------------- task


@click.group()
def task() -> None:
    """A coordinator's to-dos about contacts: add, list, mark done."""


@task.command("add")
@click.argument("ref")
@click.argument("text")
@click.option(
    "--due",
    "due",
    metavar="WHEN",
    required=True,
    help="When it is due: an ISO date or date and time read in the contact's location's time zone "
    "(2025-10-06, 2025-10-06 09:00), relative (+30m, +2h, +1d, +1w), or today/tomorrow/a weekday "
    "with an optional HH:MM (tomorrow 09:00). A date alone means the end of that day.",
)
@click.option("--assign", "assignee", metavar="NAME", help="Who does it [default: the acting --as name].")
@json_option
@value_error_as_usage
def task_add(ref: str, text: str, due: str, assignee: str | None, as_json: bool) -> None:
    """Add a task about a contact; it also appears on the timeline as task.created.

    REF is a contact id, an email address or a phone number (any format). The text is
    encrypted at rest.
    """
    the_app = state().app
    added = the_app.add_task(ref, text, actor=state().actor, due=due, assignee=assignee)
    if as_json:
        echo_json(task_json(added))
        return
    tz = the_app.location_of_contact(added.contact_id).timezone
    click.echo(
        f"task {added.id} added for contact {added.contact_id}, due {format_local(added.due_at, tz)}, "
        f"assigned to {added.assignee}"
    )


@task.command("list")
@click.option("--mine", is_flag=True, help="Only tasks assigned to the acting --as name.")
@click.option("--assignee", metavar="NAME", help="Only tasks assigned to NAME.")
@click.option("--overdue", is_flag=True, help="Only open tasks whose due time has passed.")
@click.option("--contact", "contact_ref", metavar="REF", help="Only tasks about this contact (id, email or phone).")
@click.option("--all", "all_", is_flag=True, help="Done tasks too (default: open ones only).")
@json_option
@value_error_as_usage
def task_list(
    mine: bool, assignee: str | None, overdue: bool, contact_ref: str | None, all_: bool, as_json: bool
) -> None:
    """Tasks by due time (no due time last), each with the contact it is about.

    Showing a task's text and its contact's name is an audited read. With --json, a list
    of task objects, each with "overdue" and a "contact" object.
    """
    if mine and assignee:
        raise click.UsageError("give --mine or --assignee, not both")
    if overdue and all_:
        raise click.UsageError("--overdue lists open tasks only; leave out --all")
    st = state()
    who = st.actor.name if mine else assignee
    now = utcnow()
    rows = st.app.tasks(
        actor=st.actor, assignee=who, contact=contact_ref, overdue=overdue, status=None if all_ else "open", now=now
    )
    if as_json:
        echo_json([task_json(t, c, now=now) for t, c in rows])
        return
    title = "Overdue tasks" if overdue else ("Tasks" if all_ else "Open tasks")
    if who:
        title += f" of {who}"
    columns = ["id", "due (local)", "assignee", "contact", "stage", "task"]
    if all_:
        columns.insert(1, "status")
    t = table(*columns, title=title, no_wrap=("id", "due (local)", "status", "stage"))
    for item, contact in rows:
        due: Any = NONE
        if item.due_at is not None:
            text = _short_local(item.due_at, _timezone(st.app, contact.location))
            late = item.status == "open" and item.due_at < now
            due = styled(text + ("\noverdue" if late else ""), "bold" if late else "")
        name = contact.full_name or show_id(contact.id)
        cells: list[Any] = [show_id(item.id), due, item.assignee, name, contact.stage or None, item.text]
        if all_:
            cells.insert(1, item.status)
        add_row(t, *cells)
    print_table(t)


@task.command("done")
@click.argument("task_id", metavar="ID")
@value_error_as_usage
def task_done(task_id: str) -> None:
    """Mark task ID done (the id that carecrm task list shows); it also appears on the
    contact's timeline as task.completed."""
    done = state().app.complete_task(task_id, actor=state().actor)
    click.echo(f"task {done.id} done (by {done.completed_by})")


# --------------------------------------------------------------------------- log


@click.group("log")
def log_group() -> None:
    """Record a call, text or email made outside carecrm (it counts for speed to lead)."""


def _logged(item: Interaction, the_app: CareCRM) -> None:
    tz = _timezone(the_app, item.location)
    click.echo(
        f"{item.kind} ({item.direction or 'no direction'}) logged for contact {item.contact_id} "
        f"at {format_local(item.occurred_at, tz)}"
    )


_AT_HELP = (
    "When it happened [default: now]: an ISO date and time in the contact's location's time zone "
    "(2025-10-06 09:15) or relative (-20m)."
)


@log_group.command("call")
@click.argument("ref")
@click.option(
    "--outcome",
    type=click.Choice(["completed", "missed", "voicemail"]),
    required=True,
    help="completed: you spoke; missed: no answer; voicemail: you left a message.",
)
@click.option(
    "--direction",
    type=click.Choice(["outbound", "inbound"]),
    default="outbound",
    show_default=True,
    help="Who called whom.",
)
@click.option("--note", metavar="TEXT", help="What was said (encrypted at rest).")
@click.option("--at", "at", metavar="WHEN", help=_AT_HELP)
@click.option("--duration", type=click.IntRange(min=0), metavar="SECONDS", help="How long the call lasted.")
@value_error_as_usage
def log_call(ref: str, outcome: str, direction: str, note: str | None, at: str | None, duration: int | None) -> None:
    """Log a phone call with a contact (call.completed, call.missed or call.voicemail).

    REF is a contact id, an email address or a phone number (any format).
    """
    the_app = state().app
    item = the_app.log_interaction(
        ref,
        actor=state().actor,
        kind=f"call.{outcome}",
        direction=direction,
        body=note,
        occurred_at=at,
        attributes={"duration_seconds": duration} if duration is not None else None,
    )
    _logged(item, the_app)


def _log_message(kind: str, ref: str, note: str | None, at: str | None) -> None:
    the_app = state().app
    _logged(the_app.log_interaction(ref, actor=state().actor, kind=kind, body=note, occurred_at=at), the_app)


@log_group.command("sms")
@click.argument("ref")
@click.option("--note", metavar="TEXT", help="The text sent (encrypted at rest).")
@click.option("--at", "at", metavar="WHEN", help=_AT_HELP)
@value_error_as_usage
def log_sms(ref: str, note: str | None, at: str | None) -> None:
    """Log a text message sent to a contact from outside carecrm (sms.sent, outbound)."""
    _log_message("sms.sent", ref, note, at)


@log_group.command("email")
@click.argument("ref")
@click.option("--note", metavar="TEXT", help="What the email said (encrypted at rest).")
@click.option("--at", "at", metavar="WHEN", help=_AT_HELP)
@value_error_as_usage
def log_email(ref: str, note: str | None, at: str | None) -> None:
    """Log an email sent to a contact from a mailbox carecrm does not see (email.sent, outbound)."""
    _log_message("email.sent", ref, note, at)


__all__ = ["log_group", "task", "task_json"]
