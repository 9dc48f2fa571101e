"""carecrm's minimal core: the domain model, the hook specifications, the storage
interface, the encryption boundary and the :class:`CareCRM` facade.

Plugin authors import from here::

    from carecrm.core import hookimpl, SourceConnector, LeadEvent, InteractionDraft

The names below are loaded on first use (PEP 562 module ``__getattr__``), so importing
one light module such as ``carecrm.core.model.domain`` does not import the whole core (the
command line's ``--help`` and look-ups start faster that way).  ``from carecrm.core
import X`` and ``carecrm.core.X`` work exactly as if the names were imported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from carecrm.core import _aliases

_aliases.install()

if TYPE_CHECKING:
    from carecrm.core.app import CareCRM
    from carecrm.core.config import Settings, load_settings, settings_from_dict
    from carecrm.core.errors import (
        BackendUnavailable,
        CareCRMError,
        ConfigError,
        ConflictError,
        CryptoError,
        DuplicateError,
        InvalidTransition,
        NotFound,
        PluginError,
        SchemaVersionError,
        StorageError,
        UnknownComponentError,
        ValidationFailed,
    )
    from carecrm.core.identity.directory import Timeline
    from carecrm.core.ingest import IngestReport
    from carecrm.core.ingest.connectors import Rejected, SourceConnector
    from carecrm.core.model.domain import (
        Actor,
        Appointment,
        ConsentEvent,
        ConsentSignal,
        Contact,
        Identity,
        Interaction,
        InteractionDraft,
        LeadEvent,
        Location,
        Note,
        Practice,
        RawPayload,
        StageChange,
        Task,
        Touchpoint,
    )
    from carecrm.core.plugins.hookspecs import hookimpl, hookspec

#: Where each public name lives: ``name -> module`` (imported on first access).
_EXPORTS: dict[str, str] = {
    "CareCRM": "carecrm.core.app",
    "Timeline": "carecrm.core.identity.directory",
    **dict.fromkeys(("Settings", "load_settings", "settings_from_dict"), "carecrm.core.config"),
    **dict.fromkeys(("Rejected", "SourceConnector"), "carecrm.core.ingest.connectors"),
    **dict.fromkeys(
        (
            "BackendUnavailable",
            "CareCRMError",
            "ConfigError",
            "ConflictError",
            "CryptoError",
            "DuplicateError",
            "InvalidTransition",
            "NotFound",
            "PluginError",
            "SchemaVersionError",
            "StorageError",
            "UnknownComponentError",
            "ValidationFailed",
        ),
        "carecrm.core.errors",
    ),
    **dict.fromkeys(("hookimpl", "hookspec"), "carecrm.core.plugins.hookspecs"),
    "IngestReport": "carecrm.core.ingest",
    **dict.fromkeys(
        (
            "Actor",
            "Appointment",
            "ConsentEvent",
            "ConsentSignal",
            "Contact",
            "Identity",
            "Interaction",
            "InteractionDraft",
            "LeadEvent",
            "Location",
            "Note",
            "Practice",
            "RawPayload",
            "StageChange",
            "Task",
            "Touchpoint",
        ),
        "carecrm.core.model.domain",
    ),
}

__all__ = [
    "Actor",
    "Appointment",
    "BackendUnavailable",
    "CareCRM",
    "CareCRMError",
    "ConfigError",
    "ConflictError",
    "ConsentEvent",
    "ConsentSignal",
    "Contact",
    "CryptoError",
    "DuplicateError",
    "Identity",
    "IngestReport",
    "Interaction",
    "InteractionDraft",
    "InvalidTransition",
    "LeadEvent",
    "Location",
    "Note",
    "NotFound",
    "PluginError",
    "Practice",
    "RawPayload",
    "Rejected",
    "SchemaVersionError",
    "Settings",
    "SourceConnector",
    "StageChange",
    "StorageError",
    "Task",
    "Timeline",
    "Touchpoint",
    "UnknownComponentError",
    "ValidationFailed",
    "hookimpl",
    "hookspec",
    "load_settings",
    "settings_from_dict",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here.

    :raises AttributeError: for a name that is neither public nor a submodule.
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names and whatever is already loaded."""
    return sorted(set(globals()) | set(__all__))
