"""The source-connector contract: push parsers of vendors' payloads.

A connector turns one :class:`~carecrm.core.model.domain.RawPayload` (the bytes a vendor
POSTed, with content type, headers and URL) into lead events.  It does no I/O, knows
nothing of storage and never normalizes or matches: the core does that.

A practice configures each source in ``carecrm.toml``::

    [sources.typeform]
    connector = "mapped"          # the connector_id; defaults to the section's name
    secret = "$env:TYPEFORM_SECRET"
    ...connector options...

The same connector class can serve several sources (one per form tool).

A record the connector cannot accept is yielded as a :class:`Rejected` value in its place;
the core quarantines it with a reason naming the source, the payload, the record and the
field, and the payload's other records still go in.  Shared helpers (text coercion,
canonical JSON, signature comparison, URL and UTM parameters) are in
:mod:`carecrm.core.ingest.kit`.
"""

from __future__ import annotations

import abc
import hashlib
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from carecrm.core.model.domain import LeadEvent, Practice, RawPayload
from carecrm.core.plugins.options import component_options

if TYPE_CHECKING:
    from carecrm.core.config import Settings


def _nonempty_text(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("Rejected: ref, field and reason are non-empty strings")
    return value


@attrs.frozen
class Rejected:
    """A record of a payload that a connector cannot accept, yielded by
    :meth:`SourceConnector.parse` in the place of its :class:`LeadEvent`.

    The core quarantines the record with the reason
    ``<source>: payload <file>: record <ref> (#<index> in the payload): field '<field>': <reason>``
    (the source is the connector's :attr:`~SourceConnector.name`; the index is the record's
    place among what ``parse`` yielded, left out when ``ref`` is ``#<index>`` already) and
    goes on with the payload's other records.

    :param ref: which record: the vendor's record id (``"201235151"``) or ``"#<index>"``, its
        position in the payload; an id that is not printable is shown escaped.
    :param field: the field at fault, as the vendor names it (``"callernum"``,
        ``"timestamp"``) or as the connector's options name it (``"occurred_at"``).
    :param reason: what is wrong, in words (``"missing"``, ``"not a Unix time in
        seconds"``), never the value: reasons are shown and stored in clear.
    :raises TypeError: when a part is not a non-empty string.

    Yielding a :class:`~carecrm.core.errors.ValidationFailed` instead still works in this
    release, with a :class:`DeprecationWarning`.
    """

    ref: str = attrs.field(converter=_nonempty_text)
    field: str = attrs.field(converter=_nonempty_text)
    reason: str = attrs.field(converter=_nonempty_text)


class SourceConnector(abc.ABC):
    """Base class of source connectors.

    Subclasses set :attr:`connector_id` and implement :meth:`parse`; vendors that sign
    their webhooks also implement :meth:`verify`.  A connector with options sets
    :attr:`options_type` to a frozen attrs class (:mod:`carecrm.core.plugins.options`).

    Built keyword-only, like every component (the one plugin constructor convention)::

        Connector(name="typeform", options=TypeformOptions(...), settings=settings)

    :param name: the source's name in config (``typeform``), used as the ``source`` of
        every interaction and in error messages.
    :param options: the ``[sources.<name>]`` table minus ``connector`` and ``secret``,
        structured into :attr:`options_type` by the core (a mapping is structured here).
    :param settings: the practice's settings (:attr:`practice` is ``settings.practice``).
    :raises ConfigError: from ``__init__`` if the options are wrong (name the option).

    The old positional form ``Connector(name, options, practice)`` still works for one
    release, with a :class:`DeprecationWarning`.
    """

    connector_id: ClassVar[str] = ""
    #: One line for ``carecrm plugins``.
    description: ClassVar[str] = ""
    #: The payload formats the connector reads, one short phrase each (the vendor's event
    #: or message type and its encoding: ``"form_response (JSON)"``, ``"sms inbound
    #: (form)"``), shown by ``carecrm plugins``; empty when the connector does not say.
    formats: ClassVar[tuple[str, ...]] = ()
    #: True when the vendor signs payloads and :meth:`verify` checks the signature.  A
    #: class-level default; a connector whose signing depends on its options (CallRail v3,
    #: a mapped source with a ``signature`` table) sets it on the instance.
    signed: bool = False
    #: The attrs class of the options; None (deprecated) passes them as a plain dict.
    options_type: ClassVar[type[Any] | None] = None

    def __init__(
        self, *legacy: Any, name: str | None = None, options: Any = None, settings: Settings | None = None
    ) -> None:
        if legacy:
            name, options, settings = _legacy_source_args(type(self), legacy)
        if name is None or settings is None:
            raise TypeError(f"{type(self).__name__}: pass name=..., options=..., settings=...")
        self.name = name
        self.settings = settings
        self.practice: Practice = settings.practice
        self.options: Any = component_options(
            type(self).options_type,
            {} if options is None else options,
            section=f"sources.{name}",
            owner=f"source {name!r} (connector {self.connector_id!r})",
        )
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
    def parse(self, payload: RawPayload) -> Iterable[LeadEvent | Rejected]:
        """Parse one payload into lead events, one per record.

        Yield a :class:`Rejected` ``(ref, field, reason)`` for a record that cannot be
        accepted; the other records of the payload still go in.  Raise
        :class:`~carecrm.core.errors.ValidationFailed` ``(self.name, "payload", field, reason)`` when the payload
        as a whole cannot be read (not JSON, wrong shape): then it is quarantined whole.
        Yield nothing for a payload that holds no lead record (another event type).

        (Yielding a :class:`~carecrm.core.errors.ValidationFailed` for one record is the deprecated form of
        :class:`Rejected`: it still works in this release, with a DeprecationWarning.)
        """

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check the vendor's signature of ``payload`` with the configured ``secret``.

        Called before :meth:`parse` when a secret is configured.

        :raises ValidationFailed: when the signature is missing or wrong (field = the
            signature header's name).
        """
        return None


def _legacy_source_args(cls: type[Any], args: tuple[Any, ...]) -> tuple[str, Any, Settings]:
    """``(name, options, practice)`` positional arguments, deprecated, as keywords."""
    from carecrm.core.config import Settings

    if len(args) != 3:
        raise TypeError(f"{cls.__name__}: pass name=..., options=..., settings=...")
    warnings.warn(
        f"{cls.__name__}(name, options, practice) is deprecated: pass name=..., options=..., settings=...",
        DeprecationWarning,
        stacklevel=3,
    )
    name, options, practice = args
    return str(name), options, Settings(practice=practice)
