"""carecrm's minimal core: the domain model, the hook specifications, the storage
interface, the encryption boundary and the :class:`CareCRM` facade.

Plugin authors import from here::

    from carecrm.core import hookimpl, SourceConnector, LeadEvent, InteractionDraft
"""

from __future__ import annotations

from carecrm.core.app import CareCRM, Timeline
from carecrm.core.config import Settings, load_settings, settings_from_dict
from carecrm.core.connectors import Rejected, SourceConnector
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
from carecrm.core.hookspecs import hookimpl, hookspec
from carecrm.core.ingest import IngestReport
from carecrm.core.models import (
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
