"""The built-in attribution models, registered through ``carecrm_register_attribution_models``
like any third-party model.

Each splits one conversion's credit among its touches (oldest first), as the common
analytics definitions do (Google Analytics' "first click", "last click", "linear";
"last non-direct click" is Universal Analytics' default):

* ``first_touch``: all credit to the first touch of the window;
* ``last_touch``: all credit to the last touch;
* ``last_non_direct``: all credit to the last touch whose channel group is not
  ``direct`` (a person who found the practice through an ad and later typed its address
  or called its main number from memory credits the ad); when every touch is direct,
  the last touch;
* ``linear``: equal credit to every touch.

What counts as a touch, the conversion steps and the lookback window are the core's
(:mod:`carecrm.core.analytics.attribution`); the models only weigh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from carecrm.core.analytics.attribution import AttributionModel, Touch
from carecrm.core.plugins.hookspecs import hookimpl
from carecrm.core.plugins.options import NoOptions


def _one_at(index: int, size: int) -> list[float]:
    weights = [0.0] * size
    weights[index] = 1.0
    return weights


class FirstTouch(AttributionModel):
    """All credit to the first touch."""

    model_id = "first_touch"
    description = "all credit to the first touch in the lookback window"
    options_type = NoOptions

    def attribute(self, touches: Sequence[Touch], conversion_at: datetime) -> list[float]:
        """``[1, 0, ..., 0]``."""
        return _one_at(0, len(touches))


class LastTouch(AttributionModel):
    """All credit to the last touch."""

    model_id = "last_touch"
    description = "all credit to the last touch before the conversion"
    options_type = NoOptions

    def attribute(self, touches: Sequence[Touch], conversion_at: datetime) -> list[float]:
        """``[0, ..., 0, 1]``."""
        return _one_at(len(touches) - 1, len(touches))


class LastNonDirect(AttributionModel):
    """All credit to the last touch whose channel group is not ``direct`` (the last touch
    when all are direct)."""

    model_id = "last_non_direct"
    description = "all credit to the last touch that is not direct (the last touch if all are)"
    options_type = NoOptions

    def attribute(self, touches: Sequence[Touch], conversion_at: datetime) -> list[float]:
        """1 at the last non-direct touch, else at the last touch; 0 elsewhere."""
        for index in range(len(touches) - 1, -1, -1):
            if touches[index].channel_group != "direct":
                return _one_at(index, len(touches))
        return _one_at(len(touches) - 1, len(touches))


class Linear(AttributionModel):
    """Equal credit to every touch."""

    model_id = "linear"
    description = "equal credit to every touch in the lookback window"
    options_type = NoOptions

    def attribute(self, touches: Sequence[Touch], conversion_at: datetime) -> list[float]:
        """``1/n`` for each of the ``n`` touches."""
        share = 1.0 / len(touches)
        return [share] * len(touches)


MODELS: tuple[type[AttributionModel], ...] = (FirstTouch, LastTouch, LastNonDirect, Linear)


@hookimpl
def carecrm_register_attribution_models(register: Callable[[type[AttributionModel]], None]) -> None:
    """Register ``first_touch``, ``last_touch``, ``last_non_direct`` and ``linear``."""
    for model in MODELS:
        register(model)
