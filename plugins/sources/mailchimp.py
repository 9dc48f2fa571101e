"""The Mailchimp audience webhook source connector (``connector = "mailchimp"``).

Mailchimp POSTs one form-encoded event per change to an audience member, with PHP-style
bracketed keys (``type=unsubscribe&fired_at=2014-10-22+13%3A10%3A40&data[email]=…&
data[merges][FNAME]=…``).  This connector turns each into one
:class:`~carecrm.core.model.domain.LeadEvent`: the member's email (and the name and phone of
the audience's merge fields), the member id as an external id, and the interaction and
consent signal of the event.

Vendor documentation used: "Sync audience data with webhooks"
(https://mailchimp.com/developer/marketing/guides/sync-audience-data-webhooks/): the event
types subscribe, unsubscribe, profile, upemail, cleaned and campaign, ``fired_at`` in UTC
(``YYYY-MM-DD HH:MM:SS``), the GET Mailchimp sends to validate the URL, and the advice to
secure the URL with a secret of one's own because Mailchimp does not sign webhooks.

Mapping (the reference is ``docs/sources/mailchimp.md``):

===================================  ==================  ===================================
Mailchimp ``type``                   interaction kind    consent signal
===================================  ==================  ===================================
subscribe                            (none)              email ``marketing`` granted
unsubscribe (``reason`` manual)      email.unsubscribed  email ``marketing`` revoked
unsubscribe (``reason`` abuse)       email.complained    email ``marketing`` revoked
profile                              (none)              (name and phone updated)
upemail                              (none)              (the new address joins the contact)
cleaned (``reason`` hard)            email.bounced       none: ``undeliverable`` true
cleaned (``reason`` abuse)           email.complained    email ``marketing`` revoked
campaign                             skipped (no member)
===================================  ==================  ===================================

CAN-SPAM (15 U.S.C. 7704(a)(3)-(4)): an unsubscribe is an opt-out of the sender's
commercial email, so it revokes purpose ``marketing`` on the email channel for that address
only (not appointment reminders, not other channels); a spam complaint is treated as the
same opt-out; an address cleaned for hard bounces is undeliverable, not opted out.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["MailchimpConnector", "carecrm_register_sources"]

log = logging.getLogger("carecrm.sources.mailchimp")

#: The webhook types this connector reads (``campaign`` concerns no member and is skipped).
TYPES: frozenset[str] = frozenset({"subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign"})
#: The request-URL query parameter holding the configured secret.
KEY_PARAMETER = "key"
#: Merge tags read as the person's name and phone; every other merge field is dropped.
_NAME_TAGS = {"FNAME": "first_name", "LNAME": "last_name"}
_PHONE_TAG = "PHONE"
#: Fields about the member's network that are never stored.
_PERSONAL = ("data[ip_opt]", "data[ip_signup]")
_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIRED_AT = "%Y-%m-%d %H:%M:%S"


class MailchimpConnector(SourceConnector):
    """Parses Mailchimp audience webhooks (``application/x-www-form-urlencoded``).

    Not signed by Mailchimp.  With a ``secret`` configured, :meth:`verify` requires the
    request URL to carry it as the ``key`` query parameter (the webhook URL set in
    Mailchimp is ``https://<receiver>/…?key=<secret>``).

    :param name: the source's name in config (``mailchimp``).
    :param options: none.
    :param settings: the practice's settings.
    """

    connector_id: ClassVar[str] = "mailchimp"
    description: ClassVar[str] = "Mailchimp audience webhooks (secret in the URL; unsubscribes, subscribes, profiles)"
    formats: ClassVar[tuple[str, ...]] = (
        "audience webhook (form: subscribe, unsubscribe, profile, upemail, cleaned, campaign)",
    )
    signed = False

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Compare the request URL's ``key`` query parameter with ``secret`` in constant
        time (:func:`kit.signatures_match`).

        :raises ValidationFailed: field ``key`` when the URL is missing, has no ``key`` or
            another one.
        """
        if not payload.url:
            raise ValidationFailed(self.name, "payload", KEY_PARAMETER, "no request URL to read the key from")
        try:
            query = urllib.parse.urlsplit(payload.url).query
        except ValueError:
            raise ValidationFailed(self.name, "payload", KEY_PARAMETER, "the request URL cannot be read") from None
        given = [v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k == KEY_PARAMETER]
        if not given:
            raise ValidationFailed(self.name, "payload", KEY_PARAMETER, "the request URL has no key parameter")
        if not kit.signatures_match(secret.strip().encode("utf-8"), given[0].encode("utf-8")):
            raise ValidationFailed(self.name, "payload", KEY_PARAMETER, "the URL key does not match the secret")

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """The lead event of one webhook (nothing for ``campaign`` and unknown types).

        :raises ValidationFailed: field ``body`` when the body is not UTF-8 form data or
            has a broken percent-escape; field ``type`` when it has none.
        """
        fields = _form(self.name, payload.body)
        kind = (fields.get("type") or "").strip().lower()
        if not kind:
            raise ValidationFailed(self.name, "payload", "type", "missing")
        if kind not in TYPES:
            if re.match(r"^[a-z_]{1,40}$", kind):
                log.info("%s: Mailchimp webhook type %r is not mapped; skipped", self.name, kind)
            return
        if kind == "campaign":
            return
        yield self._event(kind, fields)

    def _event(self, kind: str, f: Mapping[str, str]) -> LeadEvent | Rejected:
        member_id = (f.get("data[id]") or f.get("data[new_id]") or "").strip()
        record = member_id if _ID.match(member_id) else "#0"
        if kind == "upemail":
            email = (f.get("data[new_email]") or "").strip()
            old = (f.get("data[old_email]") or "").strip()
            if not email:
                return Rejected(record, "data[new_email]", "missing")
        else:
            email = (f.get("data[email]") or f.get("data[merges][EMAIL]") or "").strip()
            old = ""
            if not email:
                return Rejected(record, "data[email]", "missing")
        fired = (f.get("fired_at") or "").strip()
        try:
            occurred_at = datetime.strptime(fired, _FIRED_AT).replace(tzinfo=UTC)  # Mailchimp sends UTC
        except ValueError:
            return Rejected(record, "fired_at", "missing or not 'YYYY-MM-DD HH:MM:SS'")
        reason = (f.get("data[reason]") or "").strip().lower()
        action = (f.get("data[action]") or "").strip().lower()
        list_id = (f.get("data[list_id]") or "").strip()
        campaign_id = (f.get("data[campaign_id]") or "").strip()
        recipient = self.record_digest(email.lower().encode("utf-8"))[:32]
        key_id = record if record != "#0" else "h" + self.record_digest(kit.canonical_json(sorted(f.items())))[:32]
        stamp = int(occurred_at.timestamp())
        key = f"{kind}:{reason[:20]}:{key_id}:{stamp}:{recipient}"

        attributes: dict[str, Any] = {"event": kind}
        for name, field in (("list_id", list_id), ("web_id", f.get("data[web_id]", "").strip())):
            if _ID.match(field):
                attributes[name] = field
        if _ID.match(campaign_id):
            attributes["campaign_id"] = campaign_id
        if reason and _ID.match(reason):
            attributes["reason"] = reason
        if action and _ID.match(action):
            attributes["action"] = action

        interaction_kind: str | None = None
        consent: tuple[str, str] | None = None  # (status, method)
        if kind == "subscribe":
            consent = ("granted", "subscribe_form")
        elif kind == "unsubscribe":
            if reason == "abuse":
                interaction_kind, consent = "email.complained", ("revoked", "spam_complaint")
            else:
                interaction_kind, consent = "email.unsubscribed", ("revoked", "unsubscribe_link")
            attributes["scope"] = "global"
            if action == "delete":
                attributes["member_deleted"] = True
        elif kind == "cleaned":
            if reason == "abuse":
                interaction_kind, consent = "email.complained", ("revoked", "spam_complaint")
            else:
                interaction_kind = "email.bounced"
                attributes.update(bounce_type="bounce", permanent=True, undeliverable=True)

        interactions: tuple[InteractionDraft, ...] = ()
        if interaction_kind is not None:
            interactions = (
                InteractionDraft(
                    kind=interaction_kind,
                    occurred_at=occurred_at,
                    idempotency_key=key,
                    channel="email",
                    direction="outbound",  # about the practice's email, as SendGrid's events
                    attributes=attributes,
                ),
            )
        consents: tuple[ConsentSignal, ...] = ()
        if consent is not None:
            evidence: dict[str, Any] = {"method": consent[1], "source": self.name, "vendor": "mailchimp", "event": kind}
            for name in ("list_id", "campaign_id", "reason", "action"):
                if name in attributes:
                    evidence[name] = attributes[name]
            consents = (
                ConsentSignal(
                    contact_point_kind="email",
                    contact_point=email,
                    channel="email",
                    purpose="marketing",
                    status=consent[0],
                    occurred_at=occurred_at,
                    idempotency_key=f"{key}:consent",
                    evidence=evidence,
                ),
            )
        names = {attr: (f.get(f"data[merges][{tag}]") or "").strip() or None for tag, attr in _NAME_TAGS.items()}
        phone = (f.get(f"data[merges][{_PHONE_TAG}]") or "").strip()
        dropped = [k for k in _PERSONAL if f.get(k)]
        dropped += [
            k
            for k in f
            if k.startswith("data[merges][")
            and k[len("data[merges][") : -1] not in {*_NAME_TAGS, _PHONE_TAG, "EMAIL"}
            and f[k].strip()
        ]
        emails = (email, old) if old and old.lower() != email.lower() else (email,)
        return LeadEvent(
            source=self.name,
            record_ref=record,
            emails=emails,
            phones=(phone,) if phone else (),
            first_name=names["first_name"],
            last_name=names["last_name"],
            external_ids=(("mailchimp", member_id),) if record != "#0" else (),
            touchpoint=Touchpoint(source="mailchimp", medium="email", campaign=attributes.get("campaign_id") or None),
            interactions=interactions,
            consents=consents,
            dropped_fields=tuple(dropped),
        )


def _form(source: str, body: bytes) -> dict[str, str]:
    """Form fields by their literal (bracketed) names; the first of a repeated name wins.

    :raises ValidationFailed: field ``body`` for text that is not UTF-8 or a broken
        percent-escape (``%`` not followed by two hex digits).
    """
    try:
        text = body.decode("utf-8-sig")  # a byte-order mark must not eat the first field
    except UnicodeDecodeError:
        raise ValidationFailed(source, "payload", "body", "not UTF-8 text") from None
    text = text.strip()
    if _BROKEN_ESCAPE.search(text):
        raise ValidationFailed(source, "payload", "body", "a broken percent-escape in the form data")
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ValidationFailed(source, "payload", "body", "form data that is not UTF-8 once decoded") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name.strip(), value)
    return out


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`MailchimpConnector` as the ``mailchimp`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(MailchimpConnector)
