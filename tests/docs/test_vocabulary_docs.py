"""docs/vocabulary.md is current: its generated tables equal what carecrm.core.model.vocabdocs
makes from the code's registries, and every registry has its table and its meanings."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecrm.core.model import vocab, vocabdocs
from carecrm.core.pipeline.stages import DEFAULT_SIDE_STAGES, DEFAULT_STAGES, STAGE_MEANINGS, implied_stage

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "vocabulary.md"


def test_the_committed_page_matches_the_code() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert vocabdocs.render(text) == text, (
        "docs/vocabulary.md is stale: run python -m carecrm.core.model.vocabdocs docs/vocabulary.md"
    )


def test_every_registry_has_its_block_once() -> None:
    names = vocabdocs.block_names(PAGE.read_text(encoding="utf-8"))
    assert sorted(names) == sorted(vocabdocs.BLOCKS)


def test_every_default_stage_has_a_meaning() -> None:
    assert set(STAGE_MEANINGS) == set(DEFAULT_STAGES) | set(DEFAULT_SIDE_STAGES)


def test_tables_hold_every_name_of_the_registries() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for names in (
        vocab.INTERACTION_KINDS,
        vocab.CHANNELS,
        vocab.CHANNEL_GROUPS,
        vocab.CONVERSION_STEPS,
        vocab.CONSENT_PURPOSES,
        vocab.CONSENT_STATUSES,
        STAGE_MEANINGS,
    ):
        for name in names:
            assert f"| `{name}` |" in text, name


def test_implied_moves_table_is_what_implied_stage_answers() -> None:
    table = vocabdocs.implied_moves()
    assert "| `appointment.booked` | `treatment` | `booked_patient` | `returning_patient` |" in table
    assert implied_stage("appointment.booked", {"appointment_type": "treatment"}, had_completed_treatment=True) == (
        "returning_patient"
    )
    assert "follow_up" not in table  # a follow-up implies no move
    assert implied_stage("appointment.booked", {"appointment_type": "follow_up"}, had_completed_treatment=False) is None


def test_render_rewrites_only_the_blocks_and_refuses_unknown_ones() -> None:
    stale = "intro\n<!-- generated: channels -->\nold\n<!-- end generated -->\noutro\n"
    fresh = vocabdocs.render(stale)
    assert fresh.startswith("intro\n<!-- generated: channels -->\n| channel | meaning |")
    assert fresh.endswith("<!-- end generated -->\noutro\n") and "old" not in fresh
    with pytest.raises(KeyError, match="unknown generated block 'nope'"):
        vocabdocs.render("<!-- generated: nope -->\n<!-- end generated -->\n")


def test_command_line_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "v.md"
    page.write_text("<!-- generated: consent_statuses -->\n<!-- end generated -->\n", encoding="utf-8")
    assert vocabdocs.main(["--check", str(page)]) == 1
    assert "is stale" in capsys.readouterr().err
    assert vocabdocs.main([str(page)]) == 0
    assert "| `revoked` |" in page.read_text(encoding="utf-8")
    assert vocabdocs.main(["--check", str(page)]) == 0
    assert vocabdocs.main([]) == 2
