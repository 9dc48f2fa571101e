"""The marketing attribution service (journeys, models, credits by channel group, source
or campaign), which :class:`carecrm.core.CareCRM` builds once and delegates to."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from carecrm.core.analytics.attribution import (
    AttributionModel,
    AttributionReport,
    check_dimension,
    check_step,
    conversion_steps,
    credit_journeys,
    iter_journeys,
)
from carecrm.core.errors import UnknownComponentError
from carecrm.core.model.timeutil import to_utc_ms
from carecrm.core.plugins.options import build_component

if TYPE_CHECKING:
    from carecrm.core.config import Settings
    from carecrm.core.plugins.manager import Registry
    from carecrm.core.storage.contract import StorageBackend

#: The default step and lookback (``docs/vocabulary.md``, "Conversion steps").
DEFAULT_STEP = "booked_patient"
DEFAULT_LOOKBACK_DAYS = 365


class AttributionService:
    """Use cases of marketing attribution (journeys, models, credits by channel group,
    source or campaign), with explicit collaborators.

    Built once by the facade, at its construction (it opens nothing, and holds no mutable
    state: every call builds the model it uses).  The storage opens lazily, so it is
    reached through a provider on each use.

    :param settings: ``[attribution.models]`` (the models' options), the pipeline, the
        practice's time zone.
    :param models: the registered attribution model classes by ``model_id``.
    :param storage: the current storage backend (called per use).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        models: Registry[type[AttributionModel]],
        storage: Callable[[], StorageBackend],
    ) -> None:
        self.settings = settings
        self.models = models
        self._storage = storage

    def attribution_model(self, name: str) -> AttributionModel:
        """A new instance of the registered attribution model ``name``, built with its
        ``[attribution.models.<name>]`` options.

        :raises UnknownComponentError: listing the registered models.
        :raises ConfigError: for an option the model's ``options_type`` does not take or
            of the wrong type (naming the model, its plugin, the key and the known keys),
            or one the model refuses.
        """
        cls = self.models.get(name)
        return build_component(
            cls,
            name=name,
            table=self.settings.attribution.models.get(name, {}),
            settings=self.settings,
            section=f"attribution.models.{name}",
            owner=f"attribution model {name!r} of plugin {self.models.owner(name)}",
            legacy=lambda options: cls(options),
        )

    def check_configured(self) -> None:
        """Check, at start-up, that every ``[attribution.models.<id>]`` table names a
        registered model and that the model takes its options (each is built once).

        :raises UnknownComponentError: for a model no plugin registers (listing those that are).
        :raises ConfigError: as :meth:`attribution_model`.
        """
        for model_id in self.settings.attribution.models:
            if model_id not in self.models:
                raise UnknownComponentError("attribution model", model_id, self.models.names())
            self.attribution_model(model_id)

    def conversion_steps(self) -> tuple[str, ...]:
        """The conversion-ladder steps this practice's pipeline can measure, in ladder order
        (``lead``, ``consult_scheduled``, ``consult_attended``, ``booked_patient``,
        ``revenue``, ``returning_patient`` for the default pipeline)."""
        return conversion_steps(self.settings.pipeline)

    def attribute(
        self,
        model: str = "first_touch",
        by: str = "channel_group",
        step: str = DEFAULT_STEP,
        lookback_days: int = DEFAULT_LOOKBACK_DAYS,
        since: date | datetime | None = None,
        until: date | datetime | None = None,
    ) -> AttributionReport:
        """Credit the conversions at ``step`` to marketing channel groups, sources or
        campaigns with attribution model ``model``.

        Every conversion at ``step`` in [since, until) is one journey: the contact's
        touches in the ``lookback_days`` before it (what counts as a touch and as a
        conversion: :mod:`carecrm.core.analytics.attribution`).  The model splits each journey's one
        conversion among its touches; the credits of one conversion sum to one, so the
        report's credits add up to its ``conversions_touched``.  Journeys are streamed
        from storage (one contact's rows in memory at a time); only clear fields are read
        and nothing is decrypted, so no personal data is touched (and no audit entry is
        written).

        :param model: a registered model id (``first_touch``, ``last_touch``,
            ``last_non_direct``, ``linear`` or a plugin's).
        :param by: ``channel_group``, ``source`` or ``campaign``.
        :param step: a conversion step of :data:`carecrm.core.model.vocab.CONVERSION_STEPS` (default
            ``booked_patient``).
        :param lookback_days: the window before each conversion, in days (default 365),
            1 to 3650.
        :param since: conversions at or after this time; a ``date`` is the start of that
            day in the practice's time zone (its first location's).
        :param until: conversions before this time; a ``date`` includes that whole local
            day.
        :raises UnknownComponentError: for an unknown model, ``by`` or ``step`` (listing
            the known ones).
        :raises ValueError: for a ``lookback_days`` out of range, a naive datetime or
            ``since`` not before ``until`` (the message names the field).
        :raises PluginError: if the model returns weights that do not sum to one.
        """
        instance = self.attribution_model(model)
        check_dimension(by)
        pipeline = self.settings.pipeline
        check_step(step, pipeline)
        if isinstance(lookback_days, bool) or not isinstance(lookback_days, int) or not 1 <= lookback_days <= 3650:
            raise ValueError("lookback_days: must be a whole number of days from 1 to 3650")
        tz = ZoneInfo(self.settings.practice.default_location.timezone)
        low = _bound(since, tz, "since", end_of_day=False)
        high = _bound(until, tz, "until", end_of_day=True)
        if low is not None and high is not None and low >= high:
            raise ValueError("since: must be before until")
        with self._storage().unit_of_work() as uow:
            journeys = iter_journeys(
                uow, step=step, pipeline=pipeline, lookback=timedelta(days=lookback_days), since=low, until=high
            )
            return credit_journeys(
                journeys, instance, by=by, step=step, lookback_days=lookback_days, since=low, until=high
            )


def _bound(value: date | datetime | None, tz: ZoneInfo, field: str, *, end_of_day: bool) -> datetime | None:
    """A ``since``/``until`` argument as UTC: a datetime as given (it must be aware), a
    date at the start of that local day (of the next day for ``until``, which then
    includes the whole date).  :raises ValueError: naming ``field``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{field}: a datetime needs a time zone (or give a date)")
        return to_utc_ms(value)
    if isinstance(value, date):
        day = value + timedelta(days=1) if end_of_day else value
        return to_utc_ms(datetime.combine(day, time(0), tzinfo=tz))
    raise ValueError(f"{field}: must be a date or a datetime")
