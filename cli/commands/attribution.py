"""``carecrm attribute``: which channel groups, sources or campaigns earned the conversions."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from carecrm.cli.context import LazyChoice, json_option, state, value_error_as_usage
from carecrm.cli.output import add_row, echo_json, format_local, json_value, print_table, table

if TYPE_CHECKING:
    from carecrm.core.analytics.attribution import AttributionReport


def _dimensions() -> tuple[str, ...]:
    from carecrm.core.analytics.attribution import DIMENSIONS

    return DIMENSIONS


def _when(value: str | None, option: str, timezone: str) -> date | datetime | None:
    """``--since``/``--until`` text: an ISO date (``2025-03-01``), or an ISO date and time
    read in ``timezone`` unless it carries its own offset.

    :raises click.BadParameter: naming the option.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "expected an ISO date (2025-03-01) or date and time (2025-03-01T09:00)", param_hint=option
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
    return parsed


def report_json(report: AttributionReport) -> dict[str, Any]:
    """The report as JSON: its parameters, ``rows`` (``key``, ``credit``, ``share`` of the
    credited conversions, ``conversions``) and the conversion counts."""
    out: dict[str, Any] = dict(json_value(report))
    total = report.conversions_touched
    out["rows"] = [
        {"key": r.key, "credit": r.credit, "share": r.credit / total if total else 0.0, "conversions": r.conversions}
        for r in report.rows
    ]
    return out


@click.command()
@click.option(
    "--model",
    "model",
    default="first_touch",
    show_default=True,
    metavar="NAME",
    help="Attribution model: first_touch, last_touch, last_non_direct, linear, or a plugin's.",
)
@click.option(
    "--by",
    "by",
    type=LazyChoice(_dimensions),
    default="channel_group",
    show_default=True,
    help="What to credit: the marketing channel group, the source (utm_source) or the campaign.",
)
@click.option(
    "--step",
    default="booked_patient",
    show_default=True,
    metavar="STEP",
    help="The conversion step: lead, consult_scheduled, consult_attended, booked_patient, revenue, returning_patient.",
)
@click.option(
    "--lookback",
    "lookback_days",
    type=int,
    default=365,
    show_default=True,
    metavar="DAYS",
    help="Touches up to DAYS days before each conversion count.",
)
@click.option("--since", metavar="DATE", help="Conversions on or after DATE (ISO, the practice's time zone).")
@click.option("--until", metavar="DATE", help="Conversions up to and including DATE (ISO, the practice's time zone).")
@json_option
@value_error_as_usage
def attribute(
    model: str, by: str, step: str, lookback_days: int, since: str | None, until: str | None, as_json: bool
) -> None:
    """Credit the conversions at STEP to channel groups, sources or campaigns.

    Each conversion (a contact's first arrival at the step) is one journey: the
    person's touches in the lookback window before it (forms, chats, inbound calls,
    texts, referrals, walk-ins, ad and email clicks, page views). The model splits the
    conversion among its touches; each conversion's credits sum to one. Conversions
    with no touch in the window are counted apart. Reads no personal data.
    """
    the_app = state().app
    tz = the_app.settings.practice.default_location.timezone
    report = the_app.attribute(
        model=model,
        by=by,
        step=step,
        lookback_days=lookback_days,
        since=_when(since, "--since", tz),
        until=_when(until, "--until", tz),
    )
    if as_json:
        echo_json(report_json(report))
        return
    window = ""
    if report.since is not None or report.until is not None:
        window = f", conversions from {format_local(report.since, tz)} to before {format_local(report.until, tz)}"
    click.echo(f"Attribution: {report.model} by {by}, step {report.step}, lookback {report.lookback_days} days{window}")
    t = table(by, "credit", "share", "conversions")
    total = report.conversions_touched
    for row in report.rows:
        add_row(t, row.key, f"{row.credit:.2f}", f"{100 * row.credit / total:.1f}%", row.conversions)
    print_table(t)
    click.echo(
        f"conversions: {report.conversions} ({report.conversions_touched} credited over {report.touches} touches, "
        f"{report.conversions_without_touch} with no touch in the {report.lookback_days}-day window)"
    )
