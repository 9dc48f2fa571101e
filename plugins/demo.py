"""The worked example: ``carecrm demo`` tells the seed's story from vendors' payloads.

A dermatology practice in Chicago (time zone America/Chicago).  In April, Maria
Placeholder fills in the website form about acne treatment, arriving from a Google Ads
click (utm_source=google, utm_medium=cpc, utm_campaign=spring-acne, a gclid); two nurture
emails are sent in April and May and both are opened (SendGrid Event Webhook, signed with
ECDSA); in October she calls from the same number written ``(312) 555-0142`` (CallRail
post-call webhook, caller ID "WIRELESS CALLER").  A coordinator finds her by phone, sees
one timeline with the original inquiry, the two opened emails and the call, books the
consult (stage ``consult_scheduled`` with a task), the consult is attended, she books
treatment (``booked_patient``), and first-touch attribution by campaign credits
``spring-acne``.

Every payload is built in the vendor's own format (Webflow ``form_submission`` JSON,
SendGrid's JSON event array with its signature headers, CallRail's legacy form-encoded
parameters) and goes through ``CareCRM.ingest_payloads`` exactly like a live delivery.

This module is a built-in plugin: it adds the ``demo`` command through
``carecrm_register_commands``, the same hook a third-party plugin uses.
"""

from __future__ import annotations

import base64
import json
import shutil
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from carecrm.core.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    # imported where used: `carecrm --help` lists the demo command without loading them
    from cryptography.hazmat.primitives.asymmetric import ec

TIMEZONE = "America/Chicago"
MARIA_EMAIL = "maria.placeholder@example.com"
MARIA_PHONE_FORM = "+1 312 555 0142"
MARIA_PHONE_CALL = "(312) 555-0142"
INQUIRY = (
    "Hi, I've had stubborn acne on my cheeks and jawline since last year and over-the-counter "
    "products haven't helped. What treatments do you offer, and is a consult covered?"
)
LANDING_PAGE = (
    "https://www.lakesidederm.example/acne-treatment?utm_source=google&utm_medium=cpc"
    "&utm_campaign=spring-acne&utm_term=acne+dermatologist&gclid=EAIaIQobChMIdemoGclid0142"
)
TRACKING_NUMBER = "+13125550199"
COORDINATOR = "carla:coordinator"
MARKER = "# carecrm demo practice"


def demo_config(storage_url: str, sendgrid_public_key: str) -> str:
    """The demo practice's ``carecrm.toml``.

    :param storage_url: the database URL (``sqlite:///carecrm.db`` by default).
    :param sendgrid_public_key: the base64 DER public key that verifies the demo's signed
        SendGrid payloads (SendGrid's "verification key"; public, so it may sit in the file).
    """
    return f"""{MARKER} (written by `carecrm demo`; safe to delete with its folder)
[practice]
name = "Lakeside Dermatology"
regime = "US"
service_lines = ["acne", "rosacea", "mohs", "cosmetic"]

[[practice.locations]]
name = "lakeside"
timezone = "{TIMEZONE}"
region = "US"
phones = ["+13125550100"]
tracking_numbers = {{ "{TRACKING_NUMBER}" = "google-business-profile" }}

[practice.locations.business_hours]
mon = ["08:00", "17:00"]
tue = ["08:00", "17:00"]
wed = ["08:00", "17:00"]
thu = ["08:00", "17:00"]
fri = ["08:00", "16:00"]

[storage]
url = "{storage_url}"

[keys]
file = "carecrm.keys"

# The website's contact form (Webflow form_submission webhooks).
[sources.website]
connector = "mapped"
format = "json"
only_if = "triggerType == 'form_submission'"
record_id = "payload.id"
kind = "form.submitted"
channel = "web"
occurred_at = "payload.submittedAt"
answers = "payload.data"

[sources.website.fields]
email = 'payload.data.email'
first_name = 'payload.data."First Name"'
last_name = 'payload.data."Last Name"'
phone = 'payload.data."Phone Number"'
service_interest = 'payload.data.Service'
body = 'payload.data.Message'

[sources.website.touchpoint]
form_id = "payload.formId"
landing_page = 'payload.data."Landing Page"'

[sources.website.attributes]
form_name = "payload.name"

# SendGrid Event Webhook (signed: ECDSA P-256, the public verification key).
[sources.sendgrid]
secret = "{sendgrid_public_key}"

# CallRail post-call webhook; legacy times are in the practice's time zone.
[sources.callrail]
time_zone = "{TIMEZONE}"
"""


@dataclass(frozen=True)
class StoryDates:
    """When each part of the story happened (UTC).  The story sits in the last April to
    October before today, so a 365-day lookback from today reaches the April form when
    today falls between November and March; otherwise the attribution step widens the
    lookback to cover it and says so."""

    form: datetime
    email1_sent: datetime
    email1_open: datetime
    email2_sent: datetime
    email2_open: datetime
    call: datetime

    @classmethod
    def before(cls, now: datetime) -> StoryDates:
        """The story's dates for a demo run at ``now`` (UTC)."""
        tz = ZoneInfo(TIMEZONE)
        local_now = now.astimezone(tz)
        year = local_now.year if local_now.month > 10 else local_now.year - 1

        def at(month: int, day: int, hour: int, minute: int) -> datetime:
            return datetime(year, month, day, hour, minute, tzinfo=tz).astimezone(UTC)

        return cls(
            form=at(4, 14, 21, 37),
            email1_sent=at(4, 21, 9, 0),
            email1_open=at(4, 21, 19, 12),
            email2_sent=at(5, 19, 9, 0),
            email2_open=at(5, 20, 7, 45),
            call=at(10, 6, 10, 12),
        )


@dataclass
class DemoPayloads:
    """The vendor payloads of the story, per source, in replay order."""

    website: list[Any] = field(default_factory=list)
    sendgrid: list[Any] = field(default_factory=list)
    callrail: list[Any] = field(default_factory=list)


def _epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def build_payloads(dates: StoryDates, signing_key: ec.EllipticCurvePrivateKey) -> DemoPayloads:
    """Build the story's payloads in the vendors' own formats.

    * Webflow ``form_submission`` JSON (https://developers.webflow.com/data/docs/working-with-webhooks);
    * SendGrid Event Webhook: a JSON array of events, signed with ECDSA P-256 over
      ``timestamp + body`` (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features);
    * CallRail legacy post-call parameters, form-encoded, local time without a zone.
    """
    from carecrm.core.model.domain import RawPayload

    out = DemoPayloads()
    form = {
        "triggerType": "form_submission",
        "payload": {
            "name": "Acne treatment consult request",
            "siteId": "65427cf400e02b306eaa0142",
            "data": {
                "First Name": "Maria",
                "Last Name": "Placeholder",
                "email": MARIA_EMAIL,
                "Phone Number": MARIA_PHONE_FORM,
                "Service": "Acne",
                "Message": INQUIRY,
                "Landing Page": LANDING_PAGE,
            },
            "submittedAt": dates.form.strftime("%Y-%m-%dT%H:%M:%S.") + "117Z",
            "id": "6621ca84df3949bfc6750142",
            "formId": "65429eadebe8a9f3a30f0142",
        },
    }
    out.website.append(
        RawPayload(body=json.dumps(form).encode(), content_type="application/json", received_at=dates.form)
    )
    for n, (sent, opened) in enumerate(
        ((dates.email1_sent, dates.email1_open), (dates.email2_sent, dates.email2_open)), 1
    ):
        message = f"nurture{n}-0142.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC1BE-{n}.0"
        common = {"email": MARIA_EMAIL, "category": [f"acne-nurture-{n}"], "sg_message_id": message}
        events = [
            {**common, "event": "processed", "timestamp": _epoch(sent), "sg_event_id": f"cHJvY2Vzc2VkLTE0Mi0{n}"},
            {
                **common,
                "event": "delivered",
                "timestamp": _epoch(sent) + 4,
                "sg_event_id": f"ZGVsaXZlcmVkLTE0Mi0{n}",
                "response": "250 OK",
            },
        ]
        out.sendgrid.append(_signed_sendgrid(events, sent + timedelta(seconds=30), signing_key))
        opened_events = [
            {
                **common,
                "event": "open",
                "timestamp": _epoch(opened),
                "sg_event_id": f"b3BlbmVkLTE0Mi0{n}",
                "sg_machine_open": False,
            },
        ]
        out.sendgrid.append(_signed_sendgrid(opened_events, opened + timedelta(seconds=30), signing_key))
    local_call = dates.call.astimezone(ZoneInfo(TIMEZONE)).strftime("%Y-%m-%d %H:%M:%S")
    params = {
        "answered": "true",
        "callercity": "CHICAGO",
        "callercountry": "US",
        "callername": "WIRELESS CALLER",
        "callernum": MARIA_PHONE_CALL,
        "callerstate": "IL",
        "callerzip": "60601",
        "callsource": "google_my_business",
        "datetime": local_call,
        "destinationnum": "3125550100",
        "duration": "312",
        "first_call": "false",
        "gclid": "",
        "id": "301235142",
        "landingpage": "",
        "recording": "",
        "referrer": "direct",
        "referrermedium": "Direct",
        "trackingnum": TRACKING_NUMBER,
        "utm_campaign": "",
        "utm_content": "",
        "utm_medium": "",
        "utm_source": "",
        "utm_term": "",
    }
    out.callrail.append(
        RawPayload(
            body=urllib.parse.urlencode(params).encode(),
            content_type="application/x-www-form-urlencoded",
            received_at=dates.call + timedelta(minutes=6),
        )
    )
    return out


def _signed_sendgrid(events: list[dict[str, Any]], at: datetime, key: ec.EllipticCurvePrivateKey) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from carecrm.core.model.domain import RawPayload

    body = json.dumps(events, separators=(",", ":")).encode() + b"\r\n"
    stamp = str(_epoch(at))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return RawPayload(
        body=body,
        content_type="application/json",
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        },
        received_at=at,
    )


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The base64 DER SubjectPublicKeyInfo of ``key``, as SendGrid shows its verification key."""
    from cryptography.hazmat.primitives import serialization

    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def create_demo(
    directory: Path, storage_url: str | None, *, force: bool = False
) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    """Create the demo practice in ``directory``: ``carecrm.toml``, ``carecrm.keys`` (0600)
    and the database schema.

    :param storage_url: any storage URL; default a SQLite file in the folder.
    :param force: replace an earlier demo folder (only one whose config carries the demo
        marker; never another practice's folder).
    :returns: the config path and the demo's SendGrid signing key.
    :raises click.UsageError: if the folder holds something else, or a demo without ``force``.
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    from carecrm.core.app import CareCRM
    from carecrm.core.privacy.crypto import KeyRing

    config = directory / "carecrm.toml"
    if directory.exists() and any(directory.iterdir()):
        is_demo = config.is_file() and config.read_text(encoding="utf-8").startswith(MARKER)
        if not is_demo:
            raise click.UsageError(f"{directory} exists and is not a carecrm demo folder; choose another --dir")
        if not force:
            raise click.UsageError(f"{directory} holds a demo already; pass --force to replace it")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    signing_key = ec.generate_private_key(ec.SECP256R1())
    config.write_text(demo_config(storage_url or "sqlite:///carecrm.db", public_key_b64(signing_key)), encoding="utf-8")
    KeyRing.generate().write_file(directory / "carecrm.keys")
    app = CareCRM.from_config(config)
    try:
        app.create_schema()
    finally:
        app.close()
    return config, signing_key


Say = Callable[[str], None]


def replay(config: Path, payloads: DemoPayloads, say: Say) -> dict[str, Any]:
    """Ingest the story's payloads through the inbox like live deliveries; returns counts."""
    from carecrm.core.app import CareCRM
    from carecrm.core.model.domain import Actor

    totals: dict[str, Any] = {}
    webhooks = Actor(name="webhooks", role="system")
    app = CareCRM.from_config(config)
    try:
        for source, items, what in (
            (
                "website",
                payloads.website,
                "April: Maria fills in the website form about acne (Webflow), from a Google Ads click",
            ),
            ("sendgrid", payloads.sendgrid, "April and May: two nurture emails are sent and opened (SendGrid, signed)"),
            (
                "callrail",
                payloads.callrail,
                "October: Maria calls from (312) 555-0142 (CallRail; caller ID 'WIRELESS CALLER')",
            ),
        ):
            report = app.ingest_payloads(source, items, actor=webhooks)
            totals[source] = report
            say(
                f"  {what}: {report.payloads} payload(s), {report.interactions_added} interaction(s), "
                f"{report.contacts_created} new contact(s), {len(report.quarantined)} quarantined"
            )
    finally:
        app.close()
    return totals


def coordinator(config: Path, dates: StoryDates, say: Say, *, now: datetime | None = None) -> dict[str, Any]:
    """The coordinator's part: find Maria by the number she called from, read one timeline,
    book the consult with a task, record the attended consult and the booked treatment,
    then ask first-touch attribution which campaign earned the patient.

    :returns: what happened, for tests: contact id, timeline kinds, stages, attribution rows.
    """
    from carecrm.core.app import CareCRM
    from carecrm.core.model.domain import Actor

    now = now or datetime.now(UTC)
    carla = Actor.parse(COORDINATOR)
    app = CareCRM.from_config(config)
    try:
        found = app.find_contacts(actor=carla, phone=MARIA_PHONE_CALL)
        if len(found) != 1:
            raise click.ClickException(f"expected one contact for the caller's number, found {len(found)}")
        contact = found[0]
        timeline = app.timeline(contact.id, actor=carla)
        tz = ZoneInfo(TIMEZONE)
        say(f"\nThe coordinator (carla) looks up {MARIA_PHONE_CALL}: {contact.full_name}, stage {contact.stage}")
        for item in timeline.interactions:
            when = item.occurred_at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
            detail = ""
            if item.kind == "form.submitted":
                detail = f'campaign {item.touchpoint.campaign}; "{item.body}"'
            elif item.kind.startswith("email."):
                detail = f"campaign {item.touchpoint.campaign}" if item.touchpoint.campaign else ""
            elif item.kind.startswith("call."):
                detail = f"{item.attributes.get('duration_seconds', '?')} s"
            say(f"  {when}  {item.kind:<16} {item.source:<9} {detail}")
        _, score = app.score_explain(str(contact.id), actor=carla)
        reasons = ", ".join(f"{r['kind']} {r['points']:+.1f}" for r in score.reasons)
        say(f"  lead score {score.score:.1f} ({reasons})")
        say("\nShe books the consult in the same call:")
        app.set_stage(contact.id, "consult_scheduled", actor=carla, reason="booked_by_phone")
        task = app.add_task(
            contact.id,
            "Send the new-patient forms and the acne history questionnaire before the consult",
            actor=carla,
            due=(now.astimezone(tz) + timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0),
            assignee="carla",
        )
        say(
            f"  stage consult_scheduled; task {task.id} due {task.due_at.astimezone(tz):%Y-%m-%d %H:%M %Z}"
            if task.due_at
            else ""
        )
        app.set_stage(contact.id, "consult_attended", actor=carla, reason="consult_attended")
        say("  the consult is attended: stage consult_attended")
        app.set_stage(contact.id, "booked_patient", actor=carla, reason="treatment_booked")
        say("  she books treatment: stage booked_patient")
        lookback = 365
        needed = (now - dates.form).days + 1
        if needed > lookback:
            lookback = needed
            say(f"  (today is {needed} days after the form, so the lookback is widened to {lookback} days)")
        report = app.attribute(model="first_touch", by="campaign", step="booked_patient", lookback_days=lookback)
        rows = [(row.key, row.credit) for row in report.rows]
        say(f"\n`carecrm attribute --model first_touch --by campaign --lookback {lookback}`:")
        for key, credit in rows:
            say(f"  {key}: {credit:.2f}")
        history = [change.to_stage for change in app.stage_history(contact.id)]
        return {
            "contact_id": contact.id,
            "kinds": [i.kind for i in timeline.interactions],
            "inquiry": next((i.body for i in timeline.interactions if i.kind == "form.submitted"), None),
            "stages": history,
            "attribution": rows,
            "lookback_days": lookback,
            "task_id": task.id,
        }
    finally:
        app.close()


def run_demo(
    directory: Path, storage_url: str | None, say: Say, *, force: bool = False, now: datetime | None = None
) -> dict[str, Any]:
    """Create the demo practice, replay the story's payloads and play the coordinator's part.

    :returns: :func:`coordinator`'s summary plus ``config`` (the config path).
    """
    now = now or datetime.now(UTC)
    dates = StoryDates.before(now)
    config, key = create_demo(directory, storage_url, force=force)
    say(f"Created the demo practice in {directory} (Lakeside Dermatology, {TIMEZONE})")
    say("Replaying the vendors' payloads through the inbox:")
    replay(config, build_payloads(dates, key), say)
    result = coordinator(config, dates, say, now=now)
    result["config"] = config
    say(
        f"\nTry: cd {directory} && carecrm timeline {MARIA_EMAIL}   |   carecrm pipeline   |   "
        "carecrm task list   |   carecrm attribute --model linear --by channel_group"
    )
    return result


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("carecrm-demo"),
    show_default=True,
    help="Folder for the demo's carecrm.toml, key file and SQLite database.",
)
@click.option(
    "--storage",
    "storage_url",
    metavar="URL",
    help="Storage URL (default: a SQLite file in the folder). Use an empty database.",
)
@click.option("--force", is_flag=True, help="Replace an earlier demo folder (only a demo folder is ever replaced).")
def demo_command(directory: Path, storage_url: str | None, force: bool) -> None:
    """Create a demo dermatology practice and replay the worked example from vendors' payloads:
    a website form in April (Google Ads, spring-acne), two nurture emails opened (SendGrid),
    a call in October (CallRail); then the coordinator's view, the booked consult and
    first-touch attribution. Commands run inside the folder use its carecrm.toml."""
    run_demo(directory, storage_url, click.echo, force=force)


@hookimpl
def carecrm_register_commands(cli: click.Group) -> None:
    """Add ``carecrm demo`` to the command line.

    :param cli: the root click group.
    :returns: nothing.
    """
    cli.add_command(demo_command)
