"""The facade's coordinator work (tasks, assignment, speed-to-lead) use cases, mixed into :class:`carecrm.core.CareCRM`."""

from __future__ import annotations


class CoordinationMixin:
    """Use cases of coordinator work (tasks, assignment, speed-to-lead); methods take ``self`` as the :class:`CareCRM` app."""
