from __future__ import annotations

import pytest

from carecrm.core.errors import ConfigError, InvalidTransition
from carecrm.core.pipeline.stages import PipelineConfig, implied_stage


def test_default_moves() -> None:
    p = PipelineConfig.default()
    p.check_move("new_lead", "consult_scheduled")  # forward skip allowed
    p.check_move("consult_attended", "lost")  # any stage to a side stage
    p.check_move("nurture", "contacted")  # side stage back
    p.check_move("booked_patient", "returning_patient")
    for bad in [("contacted", "new_lead"), ("consult_attended", "returning_patient"), ("nurture", "booked_patient")]:
        with pytest.raises(InvalidTransition) as info:
            p.check_move(*bad)
        assert info.value.allowed == list(p.allowed_next(bad[0]))
        assert "allowed next stages" in str(info.value)


def test_unknown_stage() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        PipelineConfig.default().check_move("new_lead", "vip")


def test_configured_pipeline_validates_names() -> None:
    p = PipelineConfig.from_dict(
        {"stages": ["lead", "patient"], "side_stages": ["lost"], "transitions": {"lead": ["patient", "lost"]}}
    )
    assert p.initial == "lead"
    with pytest.raises(InvalidTransition):
        p.check_move("patient", "lead")
    with pytest.raises(ConfigError, match="unknown stage"):
        PipelineConfig.from_dict({"stages": ["lead"], "transitions": {"lead": ["nowhere"]}})


@pytest.mark.parametrize(
    ("kind", "attrs", "done", "expected"),
    [
        ("appointment.booked", {"appointment_type": "consult"}, False, "consult_scheduled"),
        ("appointment.attended", {"appointment_type": "consult"}, False, "consult_attended"),
        ("appointment.no_show", {}, False, "no_show"),
        ("treatment.accepted", {}, False, "booked_patient"),
        ("appointment.booked", {"appointment_type": "treatment"}, False, "booked_patient"),
        ("appointment.booked", {"appointment_type": "treatment"}, True, "returning_patient"),
        ("email.opened", {}, False, None),
    ],
)
def test_implied_stage(kind: str, attrs: dict[str, str], done: bool, expected: str | None) -> None:
    assert implied_stage(kind, attrs, had_completed_treatment=done) == expected
