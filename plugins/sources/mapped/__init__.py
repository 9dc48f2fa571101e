"""The generic mapped source connector (``connector = "mapped"``).

One connector class serves every form tool that POSTs a JSON, form-encoded
(``application/x-www-form-urlencoded``) or multipart (``multipart/form-data``) webhook:
Typeform, Webflow, Unbounce, Jotform and the like.  A practice describes, per source in
``carecrm.toml``, where each value lives in the vendor's payload with JMESPath selectors
(https://jmespath.org/specification.html); the option reference, with complete Typeform
and Webflow mappings, is ``docs/sources/mapped.md``.

The connector follows the source-connector contract (:mod:`carecrm.core.ingest.connectors`): it
emits *raw* identity hints and never normalizes emails, parses phones or matches people
(the core does).  Rules it applies, and where they come from:

* only mapped fields are kept; the names (never the values) of the other answers are
  listed in :attr:`LeadEvent.dropped_fields` (``docs/vocabulary.md``, "Data collected by default");
* consent comes only from explicitly configured fields (``docs/vocabulary.md``, "Consent"; the
  Typeform ``legal`` answer is a data-sharing acknowledgement, not marketing consent);
* each interaction and consent signal carries an idempotency key built from the vendor's
  record id and the event type (``docs/vocabulary.md``, "Idempotency keys");
* times are timezone-aware UTC; naive local times are read in the location's time zone
  (``docs/vocabulary.md``, "Time");
* a record that cannot be accepted is yielded as a :class:`~carecrm.core.ingest.connectors.Rejected`
  naming the record and the field, never the value (HIPAA 45 CFR 164.502(b)); the
  payload's other records still go in.

The package is split by concern, each part importable on its own:

* :mod:`.selectors` — JMESPath selectors, compiled and checked at start-up;
* :mod:`.options` — the options (:class:`MappedOptions`), their vocabularies and checks;
* :mod:`.decoding` — JSON, form-encoded and multipart bodies;
* :mod:`.values` — value coercions (phones, checkboxes, dates and times, landing pages);
* :mod:`.record` — the record builder: one record → a lead event or a ``Rejected``;
* :mod:`.minimization` — the names of the answers no selector used;
* :mod:`.keys` — no email or phone in a key or a clear column (checked at config load,
  hashed at run time);
* :mod:`.signatures` — the ``signature`` table and the HMAC check;
* :mod:`.connector` — :class:`MappedConnector`, which puts them together.

Shared helpers (text and id coercion, canonical JSON, signature comparison, URL and UTM
parameters) are the connector kit's (:mod:`carecrm.core.ingest.kit`).  Everything this
module offered before the split is still importable from here.
"""

from __future__ import annotations

from carecrm.plugins.sources.mapped.connector import MappedConnector, carecrm_register_sources
from carecrm.plugins.sources.mapped.options import _CONSENT_OPTIONS as _CONSENT_OPTIONS
from carecrm.plugins.sources.mapped.options import _OPTIONS as _OPTIONS
from carecrm.plugins.sources.mapped.options import (
    CHECKED_VALUES,
    CONTACT_POINT_KINDS,
    EXTRA_FIELDS,
    PERSON_FIELDS,
    TIME_FORMATS,
    TOUCHPOINT_FIELDS,
    UNCHECKED_VALUES,
    ConsentRule,
    MappedOptions,
)
from carecrm.plugins.sources.mapped.selectors import Selector
from carecrm.plugins.sources.mapped.signatures import _SIGNATURE_OPTIONS as _SIGNATURE_OPTIONS
from carecrm.plugins.sources.mapped.signatures import SIGNATURE_SCHEMES, SignatureRule

__all__ = [
    "CHECKED_VALUES",
    "CONTACT_POINT_KINDS",
    "EXTRA_FIELDS",
    "PERSON_FIELDS",
    "SIGNATURE_SCHEMES",
    "TIME_FORMATS",
    "TOUCHPOINT_FIELDS",
    "UNCHECKED_VALUES",
    "ConsentRule",
    "MappedConnector",
    "MappedOptions",
    "Selector",
    "SignatureRule",
    "carecrm_register_sources",
]
