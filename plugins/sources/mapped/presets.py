"""Shipped mappings of the mapped connector ("presets"): form tools that work by name.

After a bare ``carecrm init``, ``carecrm ingest typeform FILE`` reads a Typeform
``form_response`` with the ``typeform`` preset, no ``[sources.*]`` table needed: each
preset is registered as a source connector of its own (``connector_id`` = the preset's
name, :func:`preset_connectors`), so ``carecrm plugins`` lists it with its formats.

A practice that needs changes (two Typeform forms, a field mapped by its id) reuses a
preset with overrides::

    [sources.typeform_consult]
    connector = "mapped"
    preset = "typeform"
    secret = "$env:TYPEFORM_CONSULT_SECRET"
    [sources.typeform_consult.fields]
    first_name = "form_response.answers[?field.id=='JwWggjAKtOkA'] | [0].text"

(``connector = "typeform"`` is the same as ``connector = "mapped"`` with
``preset = "typeform"``.)  The source's keys replace the preset's; tables are merged key by
key (:func:`carecrm.plugins.sources.mapped.options.resolve_options`).  Reference:
``docs/sources/mapped.md``, "Presets".

Signatures: a preset carries its vendor's ``signature`` table, checked whenever the source
has a ``secret``.  Without a secret the payloads are read unverified, as the vendors send
them unsigned then (Typeform signs only webhooks given a secret; Webflow webhooks made in
its dashboard carry no signature; Jotform and Unbounce's classic webhooks never sign).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from carecrm.core.errors import ConfigError
from carecrm.plugins.sources.mapped.options import MappedOptions

__all__ = ["PRESETS", "Preset", "preset_options"]


@attrs.frozen
class Preset:
    """One shipped mapping.

    :ivar name: the preset's name, also the connector id it is registered under.
    :ivar description: one line for ``carecrm plugins``.
    :ivar formats: the payload formats it reads (shown by ``carecrm plugins``).
    :ivar doc: the vendor documentation the mapping follows (URL).
    :ivar options: the ``[sources.<name>]`` table it stands for (minus ``connector``).
    """

    name: str
    description: str
    formats: tuple[str, ...]
    doc: str
    options: Mapping[str, Any] = attrs.field(repr=False)


_TYPEFORM = Preset(
    name="typeform",
    description="Typeform form_response webhooks (a mapped-connector preset; signed when a secret is set)",
    formats=("form_response (JSON)",),
    doc="https://www.typeform.com/developers/webhooks/example-payload/",
    options={
        "format": "json",
        "only_if": "event_type == 'form_response'",
        "record_id": "form_response.token",
        "kind": "form.submitted",
        "channel": "web",
        "occurred_at": "form_response.submitted_at",
        "time_format": "iso8601",
        "answers": "form_response.answers",
        "answer_key": "field.id",
        # by field type (email, phone_number) or by the ref the form owner gave the
        # question; never by position nor by title text (typeform expected.md)
        "fields": {
            "email": "form_response.answers[?field.type=='email'] | [0].email",
            "phone": "form_response.answers[?field.type=='phone_number'] | [0].phone_number",
            "first_name": "form_response.answers[?field.ref=='first_name'] | [0].text",
            "last_name": "form_response.answers[?field.ref=='last_name'] | [0].text",
        },
        "touchpoint": {
            "form_id": "form_response.form_id",
            "landing_page": "form_response.hidden.landing_page",
            "source": "form_response.hidden.utm_source",
            "medium": "form_response.hidden.utm_medium",
            "campaign": "form_response.hidden.utm_campaign",
            "term": "form_response.hidden.utm_term",
            "content": "form_response.hidden.utm_content",
            "gclid": "form_response.hidden.gclid",
            "fbclid": "form_response.hidden.fbclid",
        },
        "attributes": {
            "form_title": "form_response.definition.title",
            "landed_at": "form_response.landed_at",
            "score": "form_response.calculated.score",
            # a data-sharing acknowledgement, NOT marketing consent (typeform expected.md)
            "legal_acknowledged": "form_response.answers[?field.type=='legal'] | [0].boolean",
        },
        # https://www.typeform.com/developers/webhooks/secure-your-webhooks/
        "signature": {
            "scheme": "hmac-sha256",
            "header": "Typeform-Signature",
            "encoding": "base64",
            "prefix": "sha256=",
        },
    },
)

_WEBFLOW = Preset(
    name="webflow",
    description="Webflow form_submission webhooks (a mapped-connector preset; signed when a secret is set)",
    formats=("form_submission (JSON)",),
    doc="https://developers.webflow.com/data/docs/working-with-webhooks",
    options={
        "format": "json",
        "only_if": "triggerType == 'form_submission'",
        "record_id": "payload.id",
        "kind": "form.submitted",
        "channel": "web",
        "occurred_at": "payload.submittedAt",
        "time_format": "iso8601",
        "answers": "payload.data",
        # keys are the labels the designer typed; Webflow names a second email field "Email 2"
        "fields": {
            "email": 'payload.data.email || payload.data.Email || payload.data."Email 2"',
            "first_name": 'payload.data."First Name"',
            "last_name": 'payload.data."Last Name"',
            "full_name": "payload.data.Name",
            "phone": 'payload.data."Phone Number" || payload.data.Phone',
            "body": "payload.data.Message",
        },
        "touchpoint": {
            "form_id": "payload.formId",
            "landing_page": 'payload.data."Landing Page"',
        },
        "attributes": {"form_name": "payload.name", "site_id": "payload.siteId"},
        # x-webflow-signature: hex HMAC-SHA256 of "<x-webflow-timestamp>:<raw body>", the
        # timestamp in milliseconds, refused when more than 5 minutes from receipt
        "signature": {
            "scheme": "hmac-sha256",
            "header": "x-webflow-signature",
            "encoding": "hex",
            "signed_payload": "{timestamp}:{body}",
            "timestamp_header": "x-webflow-timestamp",
            "timestamp_unit": "ms",
            "max_age_seconds": 300,
        },
    },
)

_UNBOUNCE = Preset(
    name="unbounce",
    description="Unbounce landing-page form webhooks (a mapped-connector preset; unsigned)",
    formats=("form submission (form-encoded, answers in data.json; data.xml ignored)",),
    doc="https://documentation.unbounce.com/hc/en-us/articles/203510044-Using-a-Webhook",
    options={
        "format": "form",
        "json_strings": ("data.json",),
        "answers": '"data.json"',
        "kind": "form.submitted",
        "channel": "web",
        # date_submitted + "11:45 AM UTC" (a 12-hour clock); without a date: the receive time
        "occurred_at": (
            "\"data.json\".date_submitted[0] && join(' ', "
            '["data.json".date_submitted[0], "data.json".time_submitted[0]])'
        ),
        "occurred_at_fallback": "received",
        "time_format": "%Y-%m-%d %I:%M %p UTC",
        "time_zone": "UTC",
        "fields": {
            "email": '"data.json".email',
            "phone": '"data.json".phone_number || "data.json".phone',
            "first_name": '"data.json".first_name',
            "last_name": '"data.json".last_name',
            "full_name": '"data.json".name',
        },
        "touchpoint": {
            "form_id": "page_id",
            "landing_page": "page_url",
            "campaign": '"data.json".utm_campaign || page_name',
            "source": '"data.json".utm_source',
            "medium": '"data.json".utm_medium',
            "term": '"data.json".utm_term',
            "content": '"data.json".utm_content',
            "gclid": '"data.json".gclid',
        },
        "attributes": {"page_name": "page_name", "variant": "variant"},
    },
)

_JOTFORM = Preset(
    name="jotform",
    description="Jotform form webhooks (a mapped-connector preset; unsigned)",
    formats=("form submission (multipart/form-data, answers in the rawRequest JSON)",),
    doc="https://www.jotform.com/help/245-how-to-setup-a-webhook-with-jotform/",
    options={
        "format": "form",
        "json_strings": ("rawRequest",),
        "record_id": "submissionID",
        "kind": "form.submitted",
        "channel": "web",
        # no submission time in the payload (jotform expected.md)
        "occurred_at_fallback": "received",
        "answers": "rawRequest",
        # answers are keyed q<id>_<slug>, the slug changing with the label: the preset
        # finds the widgets by shape; map a form's questions by key to be exact
        "fields": {
            "first_name": "values(rawRequest)[?first] | [0].first",
            "last_name": "values(rawRequest)[?first] | [0].last",
            "phone": (
                "(values(rawRequest)[?full] | [0].full) || "
                "(values(rawRequest)[?area && phone] | [0] | @ && join('', [area, phone]))"
            ),
            "email": (
                "values(rawRequest)[?type(@) == 'string' && contains(@, '@') && !contains(@, ' ') "
                "&& !contains(@, '/')] | [0]"
            ),
        },
        "touchpoint": {"form_id": "formID"},
        "attributes": {"form_title": "formTitle", "submission_type": "type"},
    },
)

#: The shipped presets by name.
PRESETS: Mapping[str, Preset] = {p.name: p for p in (_JOTFORM, _TYPEFORM, _UNBOUNCE, _WEBFLOW)}

_STRUCTURED: dict[str, MappedOptions] = {}


def preset_options(source: str, name: str) -> MappedOptions:
    """The structured options of the preset ``name``.

    :param source: the source asking, for the error.
    :raises ConfigError: ``source '<source>': option 'preset': unknown preset '<name>';
        known: jotform, typeform, unbounce, webflow``.
    """
    cached = _STRUCTURED.get(name)
    if cached is not None:
        return cached
    preset = PRESETS.get(name) if isinstance(name, str) else None
    if preset is None:
        raise ConfigError(
            f"source {source!r}: option 'preset': unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}"
        )
    options = dict(preset.options)
    options["json_strings"] = tuple(options.get("json_strings", ()))
    structured = MappedOptions(**options)
    _STRUCTURED[name] = structured
    return structured
