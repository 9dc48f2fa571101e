"""The facade's marketing attribution (journeys, models, credits by channel group, source or campaign) use cases, mixed into :class:`carecrm.core.CareCRM`."""

from __future__ import annotations


class AttributionMixin:
    """Use cases of marketing attribution (journeys, models, credits by channel group, source or campaign); methods take ``self`` as the :class:`CareCRM` app."""
