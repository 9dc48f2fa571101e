"""The source-connector contract: push parsers of vendors' payloads.

A connector turns one :class:`~carecrm.core.models.RawPayload` (the bytes a vendor
POSTed, with content type, headers and URL) into lead events.  It does no I/O, knows
nothing of storage and never normalizes or matches: the core does that.

A practice configures each source in ``carecrm.toml``::

    [sources.typeform]
    connector = "mapped"          # the connector_id; defaults to the section's name
    secret = "$env:TYPEFORM_SECRET"
    ...connector options...

The same connector class can serve several sources (one per form tool).
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from carecrm.core.errors import ValidationFailed
from carecrm.core.models import LeadEvent, Practice, RawPayload


class SourceConnector(abc.ABC):
    """Base class of source connectors.

    Subclasses set :attr:`connector_id` and implement :meth:`parse`; vendors that sign
    their webhooks also implement :meth:`verify`.

    :param name: the source's name in config (``typeform``), used as the ``source`` of
        every interaction and in error messages.
    :param options: the ``[sources.<name>]`` table minus ``connector`` and ``secret``.
    :param practice: the practice (locations and time zones for local times).
    :raises ConfigError: from ``__init__`` if the options are wrong (name the option).
    """

    connector_id: ClassVar[str] = ""
    #: One line for ``carecrm plugins``.
    description: ClassVar[str] = ""
    #: True when the vendor signs payloads and :meth:`verify` checks the signature.
    signed: ClassVar[bool] = False

    def __init__(self, name: str, options: Mapping[str, Any], practice: Practice) -> None:
        self.name = name
        self.options = dict(options)
        self.practice = practice
        self._digest: Callable[[bytes], str] | None = None

    def bind_digest(self, digest: Callable[[bytes], str]) -> None:
        """Called by the core with a keyed hash (HMAC-SHA256 under the practice's
        blind-index key) for :meth:`record_digest`."""
        self._digest = digest

    def record_digest(self, data: bytes) -> str:
        """A hex digest of a record's bytes, for idempotency keys of vendors without event
        ids.  Keyed when the core runs the connector, so a digest of a record that holds an
        email cannot be tested against guessed emails; plain SHA-256 standalone (tests)."""
        if self._digest is not None:
            return self._digest(data)
        return hashlib.sha256(data).hexdigest()

    @abc.abstractmethod
    def parse(self, payload: RawPayload) -> Iterable[LeadEvent | ValidationFailed]:
        """Parse one payload into lead events, one per record.

        Yield a :class:`ValidationFailed` (naming source, record and field) for a record
        that cannot be accepted; the other records of the payload still go in.  Raise
        :class:`ValidationFailed` when the payload as a whole cannot be read (not JSON,
        wrong shape): then it is quarantined whole.
        """

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check the vendor's signature of ``payload`` with the configured ``secret``.

        Called before :meth:`parse` when a secret is configured.

        :raises ValidationFailed: when the signature is missing or wrong (field = the
            signature header's name).
        """
        return None
