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
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from carecrm.core.errors import ValidationFailed
from carecrm.core.models import LeadEvent, Practice, RawPayload
from carecrm.core.options import component_options

if TYPE_CHECKING:
    from carecrm.core.config import Settings


class SourceConnector(abc.ABC):
    """Base class of source connectors.

    Subclasses set :attr:`connector_id` and implement :meth:`parse`; vendors that sign
    their webhooks also implement :meth:`verify`.  A connector with options sets
    :attr:`options_type` to a frozen attrs class (:mod:`carecrm.core.options`).

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
    #: True when the vendor signs payloads and :meth:`verify` checks the signature.
    signed: ClassVar[bool] = False
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
