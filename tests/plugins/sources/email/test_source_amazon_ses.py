"""Tests of the Amazon SES through SNS connector (``carecrm.plugins.sources.amazon_ses``).

The corpus (folder ``amazon_ses``) holds a bounce in its SNS envelope and a trimmed
complaint envelope; their ``Signature`` is a placeholder, so the signature tests sign
envelopes here with a test RSA key and a self-signed certificate built with
``cryptography``, by the canonical string of
https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html.  No
certificate is ever fetched.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from carecrm.core import CareCRM
from carecrm.core.config import Settings
from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.amazon_ses import AmazonSesConnector, signing_string

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
SES = CORPUS / "amazon_ses"
BOUNCE = SES / "bounce_sns_envelope.json"
COMPLAINT = SES / "complaint_sns_envelope_trimmed.json"
needs_corpus = resources.needs_corpus(CORPUS, BOUNCE, COMPLAINT)
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"
MAKE = Callable[..., CareCRM]


def _key_and_cert() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


KEY, CERT = _key_and_cert()
OTHER_KEY, OTHER_CERT = _key_and_cert()


def connector() -> AmazonSesConnector:
    return AmazonSesConnector(name="amazon_ses", options={}, settings=Settings())


def signed(envelope: dict[str, Any], *, version: str = "1", key: rsa.RSAPrivateKey = KEY) -> bytes:
    env = {**envelope, "SignatureVersion": version, "SigningCertURL": envelope.get("SigningCertURL", CERT_URL)}
    env.pop("Signature", None)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    env["Signature"] = base64.b64encode(key.sign(signing_string(env), padding.PKCS1v15(), algorithm)).decode()
    return json.dumps(env).encode()


def envelope(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "11111111-2222-3333-4444-555555555555",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses",
        "Message": json.dumps(message) + "\n",
        "Timestamp": "2024-03-01T10:00:00.000Z",
        **extra,
    }


def events(body: bytes | dict[str, Any]) -> list[LeadEvent]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = list(connector().parse(RawPayload(body=raw, content_type="text/plain; charset=UTF-8")))
    assert all(isinstance(e, LeadEvent) for e in out), out
    return [e for e in out if isinstance(e, LeadEvent)]


def mail(*to: str) -> dict[str, Any]:
    return {"messageId": "ses-msg-1", "timestamp": "2024-03-01T09:59:00.000Z", "destination": list(to)}


# --------------------------------------------------------------------------- corpus files


@needs_corpus
def test_bounce_envelope_only_the_bounced_recipient() -> None:
    (ev,) = events(BOUNCE.read_bytes())
    assert ev.emails == ("jane@example.com",)  # not mary@ or richard@, not john@ (the practice)
    (inter,) = ev.interactions
    assert inter.kind == "email.bounced"
    assert inter.occurred_at == datetime(2016, 1, 27, 14, 59, 44, 101000, tzinfo=UTC)  # bounce.timestamp
    a = inter.attributes
    assert a["bounce_type"] == "Permanent" and a["bounce_subtype"] == "General"
    assert a["undeliverable"] is True and a["smtp_status"] == "5.1.1"
    assert a["reason"] == "smtp; 550 5.1.1 <[email]>... User unknown"
    assert a["feedback_id"] == "00000138111222aa-44455566-cccc-cccc-cccc-ddddaaaa068a-000000"
    assert a["message_id"] == "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000"
    assert "time_is_delivery" not in a
    assert ev.consents == ()  # a bounce is not an opt-out
    assert "jane" not in inter.idempotency_key


@needs_corpus
def test_complaint_envelope_revokes_for_the_complainer_only() -> None:
    (ev,) = events(COMPLAINT.read_bytes())
    assert ev.emails == ("richard@example.com",)
    (inter,) = ev.interactions
    assert inter.kind == "email.complained"
    assert inter.occurred_at == datetime(2018, 3, 26, 17, 58, 59, 675000, tzinfo=UTC)  # envelope Timestamp
    assert inter.attributes["time_is_delivery"] is True and inter.attributes["feedback_type"] == "abuse"
    (consent,) = ev.consents
    assert (consent.contact_point, consent.channel, consent.purpose, consent.status) == (
        "richard@example.com",
        "email",
        "marketing",
        "revoked",
    )


@needs_corpus
def test_bounce_and_complaint_sharing_an_sns_message_id_stay_apart() -> None:
    (bounce,) = events(BOUNCE.read_bytes())
    (complaint,) = events(COMPLAINT.read_bytes())
    keys = {bounce.interactions[0].idempotency_key, complaint.interactions[0].idempotency_key}
    assert len(keys) == 2


# --------------------------------------------------------------------------- other events


def test_event_publishing_types() -> None:
    (sent,) = events(envelope({"eventType": "Send", "mail": mail("a@example.com")}))
    assert sent.interactions[0].kind == "email.sent"
    (delivered,) = events(
        envelope(
            {
                "eventType": "Delivery",
                "mail": mail("a@example.com"),
                "delivery": {"timestamp": "2024-03-01T10:00:01Z", "recipients": ["a@example.com"]},
            }
        )
    )
    assert delivered.interactions[0].kind == "email.delivered"
    link = "https://practice.example/p?utm_source=ses&utm_campaign=spring&token=x"
    (click,) = events(
        envelope(
            {
                "eventType": "Click",
                "mail": mail("a@example.com"),
                "click": {"timestamp": "2024-03-01T10:05:00Z", "link": link},
            }
        )
    )
    assert click.interactions[0].attributes["url"] == "https://practice.example/p"
    assert click.touchpoint.source == "ses" and click.touchpoint.campaign == "spring"
    # an open of a message to several recipients names none of them: nothing is credited
    assert (
        events(
            envelope(
                {
                    "eventType": "Open",
                    "mail": mail("a@example.com", "b@example.com"),
                    "open": {"timestamp": "2024-03-01T10:05:00Z"},
                }
            )
        )
        == []
    )
    (transient,) = events(
        envelope(
            {
                "notificationType": "Bounce",
                "mail": mail("a@example.com"),
                "bounce": {
                    "bounceType": "Transient",
                    "timestamp": "2024-03-01T10:00:00Z",
                    "bouncedRecipients": [{"emailAddress": "a@example.com"}],
                },
            }
        )
    )
    assert transient.interactions[0].attributes["undeliverable"] is False and transient.consents == ()


def test_not_spam_feedback_is_no_revocation() -> None:
    (ev,) = events(
        envelope(
            {
                "notificationType": "Complaint",
                "mail": mail("a@example.com"),
                "complaint": {
                    "complaintFeedbackType": "not-spam",
                    "timestamp": "2024-03-01T10:00:00Z",
                    "complainedRecipients": [{"emailAddress": "a@example.com"}],
                },
            }
        )
    )
    assert ev.interactions[0].kind == "email.complained" and ev.consents == ()


def test_subscription_management() -> None:
    unsub_all = {
        "eventType": "Subscription",
        "mail": mail("a@example.com"),
        "subscription": {"timestamp": "2024-03-01T10:00:00Z", "newTopicPreferences": {"unsubscribeAll": True}},
    }
    (ev,) = events(envelope(unsub_all))
    assert ev.interactions[0].kind == "email.unsubscribed"
    assert (ev.consents[0].purpose, ev.consents[0].status) == ("marketing", "revoked")
    topics = {
        "unsubscribeAll": False,
        "topicSubscriptionStatus": [
            {"topicName": "news", "subscriptionStatus": "OptOut"},
            {"topicName": "tips", "subscriptionStatus": "OptIn"},
        ],
    }
    (tev,) = events(
        envelope({**unsub_all, "subscription": {"timestamp": "2024-03-01T10:00:00Z", "newTopicPreferences": topics}})
    )
    assert tev.interactions == ()
    assert sorted((c.purpose, c.status) for c in tev.consents) == [
        ("marketing:topic:news", "revoked"),
        ("marketing:topic:tips", "granted"),
    ]
    assert len({c.idempotency_key for c in tev.consents}) == 2


def test_subscription_confirmation_is_recognised_not_a_lead() -> None:
    confirm = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "m-1",
        "Token": "tok",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses",
        "Message": "You have chosen to subscribe to the topic …",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=tok",
        "Timestamp": "2024-03-01T10:00:00.000Z",
    }
    assert events(confirm) == []
    body = signed(confirm, version="2")
    connector().verify(RawPayload(body=body), CERT)  # its signature covers SubscribeURL and Token


def test_bad_input() -> None:
    c = connector()
    cases = (
        (b"{", "body"),
        (b"[]", "body"),
        (json.dumps({"Type": "Weird"}).encode(), "Type"),
        (json.dumps(envelope({})).replace('"{}\\n"', '"not json"').encode(), "Message"),
        (json.dumps({**envelope({}), "Message": {"already": "an object"}}).encode(), "Message"),
        (json.dumps(envelope({"mail": {}})).encode(), "notificationType"),
    )
    for body, field in cases:
        with pytest.raises(ValidationFailed) as err:
            list(c.parse(RawPayload(body=body)))
        assert err.value.field == field, body
    no_recipient = envelope(
        {
            "notificationType": "Bounce",
            "mail": mail(),
            "bounce": {"feedbackId": "f1", "timestamp": "2024-03-01T10:00:00Z", "bouncedRecipients": []},
        }
    )
    assert list(c.parse(RawPayload(body=json.dumps(no_recipient).encode()))) == [
        Rejected("f1", "bounce.recipients", "no recipient")
    ]
    assert events(envelope({"eventType": "RenderingFailure", "mail": mail("a@example.com")})) == []


# --------------------------------------------------------------------------- signatures


@needs_corpus
@pytest.mark.parametrize("version", ["1", "2"])
def test_signature_versions_verify_and_tampering_fails(version: str) -> None:
    env = json.loads(BOUNCE.read_bytes())
    body = signed(env, version=version)
    connector().verify(RawPayload(body=body), CERT)
    connector().verify(RawPayload(body=body), OTHER_CERT + CERT)  # several certificates: any one signs
    tampered = body.replace(b"jane@example.com", b"jone@example.com")
    with pytest.raises(ValidationFailed, match="does not match") as err:
        connector().verify(RawPayload(body=tampered), CERT)
    assert err.value.field == "Signature" and "jone" not in err.value.reason
    with pytest.raises(ValidationFailed, match="does not match"):
        connector().verify(RawPayload(body=body), OTHER_CERT)


@needs_corpus
def test_the_corpus_placeholder_signature_fails() -> None:
    with pytest.raises(ValidationFailed) as err:
        connector().verify(RawPayload(body=BOUNCE.read_bytes()), CERT)
    assert err.value.field == "Signature"


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.amazonaws.com/cert.pem",
        "https://x@sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
        "https://sns.us-east-1.amazonaws.com/cert.txt",
        "https://[::1/cert.pem",
    ],
)
def test_certificate_urls_off_sns_hosts_are_refused(url: str) -> None:
    body = signed(envelope({"eventType": "Send", "mail": mail("a@example.com")}, SigningCertURL=url))
    with pytest.raises(ValidationFailed) as err:
        connector().verify(RawPayload(body=body), CERT)
    assert err.value.field == "SigningCertURL"


def test_other_signature_problems() -> None:
    good = json.loads(signed(envelope({"eventType": "Send", "mail": mail("a@example.com")})))
    connector().verify(RawPayload(body=json.dumps(good).encode()), CERT)
    connector().verify(RawPayload(body=json.dumps(good).encode()), "\n" + CERT + "\n")
    for change, field in (
        ({"SignatureVersion": "3"}, "SignatureVersion"),
        ({"Signature": "!!"}, "Signature"),
        ({"Signature": ""}, "Signature"),
        ({"SigningCertURL": None}, "SigningCertURL"),
    ):
        with pytest.raises(ValidationFailed) as err:
            connector().verify(RawPayload(body=json.dumps({**good, **change}).encode()), CERT)
        assert err.value.field == field
    with pytest.raises(ValidationFailed, match="not a PEM certificate"):
        connector().verify(RawPayload(body=json.dumps(good).encode()), "not a certificate")


# --------------------------------------------------------------------------- the app


def test_registered_as_a_built_in() -> None:
    assert "carecrm.plugins.sources.amazon_ses" in DEFAULT_PLUGINS and AmazonSesConnector.signed


@needs_corpus
def test_corpus_through_the_app_by_name(make_app: MAKE) -> None:
    app = make_app()
    payloads = [RawPayload(body=p.read_bytes(), content_type="text/plain", origin=p.name) for p in (BOUNCE, COMPLAINT)]
    with pytest.raises(ConfigError, match="no secret"):
        app.ingest_payloads("amazon_ses", payloads, actor=ACTOR)
    report = app.ingest_payloads("amazon_ses", payloads, verify=False, actor=ACTOR)
    assert report.quarantined == [] and report.interactions_added == 2 and report.contacts_created == 2
    assert [i.kind for i in app.timeline("jane@example.com", actor=ACTOR).interactions] == ["email.bounced"]
    richard = app.timeline("richard@example.com", actor=ACTOR).contact
    jane = app.timeline("jane@example.com", actor=ACTOR).contact
    with app.storage.unit_of_work() as uow:
        assert [(r.channel, r.purpose, r.status) for r in uow.consents.for_contact(richard.id)] == [
            ("email", "marketing", "revoked")
        ]
        assert list(uow.consents.for_contact(jane.id)) == []
    again = app.ingest_payloads(
        "amazon_ses",
        [RawPayload(body=json.dumps(json.loads(p.body), indent=1).encode()) for p in payloads],
        verify=False,
        actor=ACTOR,
    )
    assert again.interactions_added == 0 and again.quarantined == [] and app.counts()["contacts"] == 2


@needs_corpus
def test_signed_through_the_app_and_confirmation_ignored(make_app: MAKE) -> None:
    app = make_app(sources={"amazon_ses": {"secret": CERT}})
    body = signed(json.loads(BOUNCE.read_bytes()), version="2")
    assert app.ingest_payloads("amazon_ses", [RawPayload(body=body)], actor=ACTOR).interactions_added == 1
    forged = app.ingest_payloads("amazon_ses", [RawPayload(body=body.replace(b"jane@", b"jone@"))], actor=ACTOR)
    assert forged.interactions_added == 0 and forged.quarantined[0].field == "Signature"
    confirm = signed(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "m-2",
            "Token": "tok",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses",
            "Message": "confirm",
            "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
            "Timestamp": "2024-03-01T10:00:00.000Z",
        }
    )
    report = app.ingest_payloads("amazon_ses", [RawPayload(body=confirm)], actor=ACTOR)
    assert report.interactions_added == 0 and report.contacts_created == 0 and report.quarantined == []
    (item,) = app.inbox_list(status="ignored", source="amazon_ses")
    assert item.reason
