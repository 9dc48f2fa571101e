"""The facade's segments (filter trees compiled by the storage backend, previews, saved segments) use cases, mixed into :class:`carecrm.core.CareCRM`."""

from __future__ import annotations


class SegmentsMixin:
    """Use cases of segments (filter trees compiled by the storage backend, previews, saved segments); methods take ``self`` as the :class:`CareCRM` app."""
