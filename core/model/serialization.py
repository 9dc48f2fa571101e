"""Private cattrs converters (one per format; never the global converter).

:data:`json_converter` (un)structures domain objects to JSON-ready values: datetimes as
ISO 8601 UTC with a ``Z`` and milliseconds, dates as ISO dates, UUIDs as strings.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import cattrs

from carecrm.core.model.timeutil import isoformat_z, to_utc_ms


def make_json_converter() -> cattrs.Converter:
    """A new converter for JSON: UTC ``Z`` datetimes, ISO dates, string UUIDs."""
    conv = cattrs.Converter(omit_if_default=False)
    conv.register_unstructure_hook(datetime, isoformat_z)
    conv.register_structure_hook(
        datetime, lambda v, _: to_utc_ms(datetime.fromisoformat(str(v).replace("Z", "+00:00")))
    )
    conv.register_unstructure_hook(date, lambda d: d.isoformat())
    conv.register_structure_hook(date, lambda v, _: date.fromisoformat(str(v)))
    conv.register_unstructure_hook(uuid.UUID, str)
    conv.register_structure_hook(uuid.UUID, lambda v, _: uuid.UUID(str(v)))
    return conv


json_converter = make_json_converter()


def to_json_value(obj: Any) -> Any:
    """Unstructure an attrs object (or container of them) into JSON-ready values."""
    return json_converter.unstructure(obj)


def compact(mapping: dict[str, Any]) -> dict[str, Any]:
    """A copy without None values and empty strings (for touchpoints stored as JSON)."""
    return {k: v for k, v in mapping.items() if v is not None and v != ""}
