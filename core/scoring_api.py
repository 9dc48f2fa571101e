"""The facade's lead scores (the chosen scoring model, live updates, explanations) use cases, mixed into :class:`carecrm.core.CareCRM`."""

from __future__ import annotations


class ScoringMixin:
    """Use cases of lead scores (the chosen scoring model, live updates, explanations); methods take ``self`` as the :class:`CareCRM` app."""
