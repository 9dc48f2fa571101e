"""The whole vendor corpus by the vendors' names (issue 8, "Done when").

After a bare-init style app (no ``[sources.*]`` tables at all), every payload file of
every corpus folder whose vendor has a built-in connector is read the way ``carecrm
ingest VENDOR FOLDER`` reads it (:func:`carecrm.cli.payloads.expand_paths` and
:func:`~carecrm.cli.payloads.read_payloads`: notes and ``*.meta.json`` skipped, the
content type guessed from the file name) and ingested by the vendor's name with
``verify=False`` (a signed vendor needs a secret otherwise).  Nothing is quarantined
except the files listed in :data:`REFUSED` (each with the reason its ``*.expected.md``
gives); then the whole corpus again adds nothing: the counts of contacts, interactions,
consent events and inbox rows stay as they were.

Without the corpus the test skips, counted (:mod:`carecrm.core.testing.resources`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from carecrm.cli.payloads import expand_paths, read_payloads
from carecrm.core import CareCRM
from carecrm.core.model.domain import Actor
from carecrm.core.testing import resources

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[2]
CORPUS = resources.corpus_dir(REPO)
MAKE = Callable[..., CareCRM]

#: The corpus folders of issue 8's webhook vendors, each with a built-in connector (or
#: a shipped mapping preset) of the same name.  The other folders (acuity, calendly,
#: fhir_r4, hl7v2, vcard, the CSV exports) are the next issue's.
VENDORS: tuple[str, ...] = (
    "typeform",
    "jotform",
    "webflow",
    "unbounce",
    "meta_lead_ads",
    "google_ads_lead_form",
    "linkedin_lead_gen",
    "intercom",
    "olark",
    "hubspot",
    "twilio",
    "callrail",
    "mailchimp",
    "mailgun",
    "postmark",
    "amazon_ses",
    "sendgrid",
)

#: Corpus files whose ``*.expected.md`` says the payload (or one record of it) is
#: refused, as ``(vendor, file name, field at fault)``.  Every other file must go in
#: whole.
REFUSED: frozenset[tuple[str, str, str]] = frozenset(
    {
        # "email: NONE in this submission. phone: NONE ... contact created/matched by name
        # alone is NOT allowed": the record is parked (quarantined), no contact is made.
        ("jotform", "submission_multipart.txt", "identity"),
        # "with_xml: NO email/phone at all ... park as an unidentified submission, don't
        # create a contact".
        ("unbounce", "form_submission_with_xml.form.txt", "identity"),
        # "the decoded inner message, for reference": not what SNS delivers (no envelope,
        # no ``Type: Notification``), so it is refused as a payload of its own.
        ("amazon_ses", "bounce_notification_message.json", "Type"),
        # "NOT part of field_data; must be requested separately": the consent answers
        # alone name no contact point; they complete a lead (``inbox complete``).
        ("meta_lead_ads", "lead_custom_disclaimer_responses.json", "field_data"),
    }
)

needs_corpus = resources.needs_corpus(CORPUS)


def _counts(app: CareCRM) -> dict[str, int]:
    with app.storage.unit_of_work() as uow:
        return {
            "contacts": uow.contacts.count(),
            "interactions": uow.interactions.count(),
            "consents": uow.consents.count(),
            "inbox": uow.inbox.count(),
        }


def _files(vendor: str) -> list[str]:
    return expand_paths([str(CORPUS / vendor)])


def _ingest_all(app: CareCRM, pending: dict[str, int] | None = None) -> dict[str, list[tuple[str, str, str]]]:
    """Ingest every vendor folder; the refusals per vendor as (vendor, file, field), and
    the payloads left pending per vendor into ``pending``."""
    refused: dict[str, list[tuple[str, str, str]]] = {}
    for vendor in VENDORS:
        files = _files(vendor)
        assert files, f"{vendor}: no payload files"
        payloads = read_payloads(files, stdin=None, content_type=None, headers={}, url=None)
        report = app.ingest_payloads(vendor, payloads, actor=ACTOR, verify=False)
        if pending is not None and report.pending:
            pending[vendor] = report.pending
        refused[vendor] = [(vendor, Path(q.payload or "?").name, q.field) for q in report.quarantined]
    return refused


@needs_corpus
def test_every_corpus_file_ingests_by_name_and_again_adds_nothing(make_app: MAKE) -> None:
    app = make_app()  # bare init: no [sources] tables
    pending: dict[str, int] = {}
    refused = _ingest_all(app, pending)
    assert {r for rs in refused.values() for r in rs} == REFUSED, refused
    # the pointer-only vendors' notifications wait for a fetch (``inbox complete``)
    assert pending == {"meta_lead_ads": 1, "linkedin_lead_gen": 1, "hubspot": 1}
    first = _counts(app)
    assert first["contacts"] > 0 and first["interactions"] > 0 and first["consents"] > 0
    assert first["inbox"] == sum(len(_files(v)) for v in VENDORS)  # one inbox row per file
    again = _ingest_all(app)
    assert {r for rs in again.values() for r in rs} == REFUSED, again
    assert _counts(app) == first
