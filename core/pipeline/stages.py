"""The lifecycle pipeline: stages, allowed moves, and moves implied by interactions.

Default (``docs/vocabulary.md``, "Lifecycle stages"): main stages ``new_lead`` →
``contacted`` → ``consult_scheduled`` → ``consult_attended`` → ``booked_patient`` →
``returning_patient``; side stages ``no_show``, ``nurture``, ``not_a_candidate``,
``lost`` (with a reason code), ``existing_patient``.  Allowed by default: forward to any
later main stage; from any stage to a side stage; from a side stage back to
``contacted`` or ``consult_scheduled``; ``returning_patient`` only from
``booked_patient``; nothing back to ``new_lead``.  A practice may replace the stages and
list its own transitions in ``[pipeline]``.  A person's own move always wins over a move
an interaction implies (:func:`implied_stage`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from carecrm.core.errors import ConfigError, InvalidTransition

DEFAULT_STAGES = (
    "new_lead",
    "contacted",
    "consult_scheduled",
    "consult_attended",
    "booked_patient",
    "returning_patient",
)
DEFAULT_SIDE_STAGES = ("no_show", "nurture", "not_a_candidate", "lost", "existing_patient")

#: What each default stage means (``docs/vocabulary.md`` is generated from it).
STAGE_MEANINGS: dict[str, str] = {
    "new_lead": "a first inquiry nobody has answered yet; every new contact starts here",
    "contacted": "the practice reached the person",
    "consult_scheduled": "a consultation is booked",
    "consult_attended": "the person came to the consultation",
    "booked_patient": "the person booked or accepted treatment: became a patient",
    "returning_patient": "the person booked a new treatment after completing one",
    "no_show": "the person missed a booked appointment",
    "nurture": "not ready yet: kept warm with occasional contact",
    "not_a_candidate": "the treatment is not right for the person (a clinical judgement)",
    "lost": "the person went elsewhere or stopped answering (with a reason code such as too_expensive)",
    "existing_patient": "an inquiry from someone already a patient, which is not a new lead",
}


def _default_transitions(stages: tuple[str, ...], side: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for i, stage in enumerate(stages):
        forward = [s for s in stages[i + 1 :] if s != "returning_patient"]
        if stage == "booked_patient" and "returning_patient" in stages:
            forward.append("returning_patient")
        out[stage] = tuple(forward) + tuple(s for s in side if s != stage)
    back = tuple(s for s in ("contacted", "consult_scheduled") if s in stages)
    for stage in side:
        out[stage] = back + tuple(s for s in side if s != stage)
    return out


@attrs.frozen(kw_only=True)
class PipelineConfig:
    """One pipeline: its stages in order, side stages, and allowed transitions.

    :ivar name: the pipeline's name (``default``; one per service line if wanted).
    :ivar stages: main stages in order; the first is where new leads start.
    :ivar side_stages: stages beside the main line.
    :ivar transitions: stage → stages that may follow it.
    """

    name: str = "default"
    stages: tuple[str, ...] = DEFAULT_STAGES
    side_stages: tuple[str, ...] = DEFAULT_SIDE_STAGES
    transitions: dict[str, tuple[str, ...]] = attrs.Factory(
        lambda self: _default_transitions(self.stages, self.side_stages), takes_self=True
    )

    @classmethod
    def default(cls) -> PipelineConfig:
        """The default lifecycle (:data:`DEFAULT_STAGES`, :data:`DEFAULT_SIDE_STAGES` and
        their default moves)."""
        return cls()

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], *, where: str = "config") -> PipelineConfig:
        """Build from a ``[pipeline]`` table (empty → the default).

        :raises ConfigError: if a transition names an unknown stage.
        """
        if not table:
            return cls.default()
        stages = tuple(table.get("stages", DEFAULT_STAGES))
        side = tuple(table.get("side_stages", DEFAULT_SIDE_STAGES))
        if not stages:
            raise ConfigError(f"{where}: pipeline.stages must not be empty")
        known = set(stages) | set(side)
        transitions = _default_transitions(stages, side)
        if "transitions" in table:
            transitions = {}
            for src, dests in dict(table["transitions"]).items():
                for stage in [src, *dests]:
                    if stage not in known:
                        raise ConfigError(f"{where}: pipeline.transitions names unknown stage {stage!r}")
                transitions[str(src)] = tuple(dests)
        return cls(name=str(table.get("name", "default")), stages=stages, side_stages=side, transitions=transitions)

    @property
    def initial(self) -> str:
        """The stage new leads start in."""
        return self.stages[0]

    @property
    def all_stages(self) -> tuple[str, ...]:
        """Main stages then side stages."""
        return self.stages + self.side_stages

    def allowed_next(self, stage: str) -> tuple[str, ...]:
        """Stages that may follow ``stage``."""
        return self.transitions.get(stage, ())

    def check_move(self, from_stage: str, to_stage: str) -> None:
        """Refuse a move the pipeline does not allow.

        :raises InvalidTransition: listing the allowed next stages.
        :raises ValueError: if ``to_stage`` is not a stage of this pipeline.
        """
        if to_stage not in self.all_stages:
            raise ValueError(f"unknown stage {to_stage!r}; stages: {', '.join(self.all_stages)}")
        if to_stage not in self.allowed_next(from_stage):
            raise InvalidTransition(from_stage, to_stage, self.allowed_next(from_stage))

    def is_forward(self, from_stage: str, to_stage: str) -> bool:
        """True when ``to_stage`` is a later main stage than ``from_stage`` (or a side stage)."""
        if to_stage in self.side_stages:
            return True
        if from_stage in self.side_stages:
            return True
        try:
            return self.stages.index(to_stage) > self.stages.index(from_stage)
        except ValueError:
            return False


def implied_stage(kind: str, attributes: Mapping[str, Any], *, had_completed_treatment: bool) -> str | None:
    """The stage an interaction implies (``docs/vocabulary.md``, "Moves implied by interactions").

    * ``appointment.booked`` of type consult → ``consult_scheduled``;
    * ``appointment.attended`` of type consult → ``consult_attended``;
    * ``appointment.no_show`` → ``no_show``;
    * ``treatment.accepted``, or a booked treatment appointment → ``booked_patient``, or
      ``returning_patient`` when a treatment was already completed.

    :param attributes: the interaction's attributes (``appointment_type``).
    :param had_completed_treatment: whether the contact has a ``treatment.performed``.
    :returns: the implied stage, or None.
    """
    appt_type = str(attributes.get("appointment_type") or "").lower()
    if kind == "appointment.booked":
        if appt_type == "consult":
            return "consult_scheduled"
        if appt_type == "treatment":
            return "returning_patient" if had_completed_treatment else "booked_patient"
        return None
    if kind == "appointment.attended" and appt_type == "consult":
        return "consult_attended"
    if kind == "appointment.no_show":
        return "no_show"
    if kind == "treatment.accepted":
        return "returning_patient" if had_completed_treatment else "booked_patient"
    return None
