"""``carecrm stage`` (move a contact between lifecycle stages) and ``carecrm pipeline``."""

from __future__ import annotations

import click

from carecrm.cli.context import CliError, json_option, state, value_error_as_usage
from carecrm.cli.output import add_row, echo_json, format_duration, print_table, table
from carecrm.core.errors import InvalidTransition


@click.group()
def stage() -> None:
    """Lifecycle stages: move a contact, list the stages and allowed moves."""


@stage.command("set")
@click.argument("ref")
@click.argument("stage_name", metavar="STAGE")
@click.option("--reason", metavar="TEXT", help="Why (a reason code; required for lost).")
@value_error_as_usage
def stage_set(ref: str, stage_name: str, reason: str | None) -> None:
    """Move a contact to STAGE (a person's move always wins over moves implied by
    interactions). REF is a contact id, an email address or a phone number.

    A move the pipeline does not allow is refused with the allowed next stages (exit
    status 2); see carecrm stage list.
    """
    try:
        change = state().app.set_stage(ref, stage_name, actor=state().actor, reason=reason)
    except InvalidTransition as exc:
        allowed = ", ".join(exc.allowed) if exc.allowed else "(none)"
        raise CliError(
            f"cannot move this contact from {exc.from_stage!r} to {exc.to_stage!r}; allowed next stages: {allowed}"
        ) from None
    click.echo(f"contact {change.contact_id}: {change.from_stage or '(none)'} → {change.to_stage} (by {change.actor})")


@stage.command("list")
@json_option
def stage_list(as_json: bool) -> None:
    """The pipeline's stages and the moves allowed from each."""
    pipe = state().app.settings.pipeline
    rows = [
        {
            "stage": s,
            "kind": "main" if s in pipe.stages else "side",
            "allowed_next": list(pipe.allowed_next(s)),
        }
        for s in pipe.all_stages
    ]
    if as_json:
        echo_json({"pipeline": pipe.name, "initial": pipe.initial, "stages": rows})
        return
    t = table("stage", "kind", "allowed next stages", title=f"Pipeline {pipe.name!r}")
    for r in rows:
        add_row(t, r["stage"], r["kind"], r["allowed_next"])
    print_table(t)


@click.command()
@json_option
def pipeline(as_json: bool) -> None:
    """How many contacts are in each stage, the median time they have been there, and their
    speed to lead: the median time from a lead's first inbound interaction to the first
    outbound call, SMS or email, counted in the location's business hours.

    With --json, one object per stage: stage, count, median_seconds, median,
    speed_to_lead_median_seconds, speed_to_lead_median, speed_to_lead_measured (leads
    answered) and awaiting_first_response (leads not answered yet).
    """
    the_app = state().app
    rows = the_app.pipeline_report()
    if as_json:
        echo_json(
            [
                {
                    "stage": r.stage,
                    "count": r.count,
                    "median_seconds": r.median_seconds,
                    "median": format_duration(r.median_seconds) if r.median_seconds is not None else None,
                    "speed_to_lead_median_seconds": r.speed_to_lead.median_seconds,
                    "speed_to_lead_median": (
                        format_duration(r.speed_to_lead.median_seconds)
                        if r.speed_to_lead.median_seconds is not None
                        else None
                    ),
                    "speed_to_lead_measured": r.speed_to_lead.measured,
                    "awaiting_first_response": r.speed_to_lead.awaiting,
                }
                for r in rows
            ]
        )
        return
    t = table(
        "stage",
        "contacts",
        "median time in stage",
        "median speed to lead",
        "awaiting first response",
        title="Pipeline",
        no_wrap=("stage",),
    )
    for r in rows:
        add_row(
            t,
            r.stage,
            r.count,
            format_duration(r.median_seconds),
            format_duration(r.speed_to_lead.median_seconds),
            r.speed_to_lead.awaiting or None,
        )
    print_table(t)
    click.echo(f"total: {sum(r.count for r in rows)} contacts")
    overall = the_app.speed_to_lead_summary()
    if overall.measured or overall.awaiting:
        click.echo(
            f"speed to lead (business hours): median {format_duration(overall.median_seconds)} over "
            f"{overall.measured} answered leads; {overall.awaiting} awaiting a first response"
        )
