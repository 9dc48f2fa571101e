"""The application-level storage contract: a representative run of the use cases, from
ingest through the timeline, stage moves, tasks and speed to lead, segments, attribution
and scoring, on SQLite **and** on MongoDB (mongomock), so a use case that only works on
one backend fails here.

The use-case tests themselves live in their own modules; this module loads them and
collects them again under its own ``make_app`` fixture, parametrized by backend (the
selection is :data:`USE_CASES`).  ``make_app()`` called twice in one test opens the same
database, as the SQLite fixture of ``conftest.py`` does.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from carecrm.core import CareCRM, settings_from_dict
from carecrm.core.privacy.crypto import KeyRing
from carecrm.storage_backends.mongo.backend import forget_mock

HERE = Path(__file__).resolve().parent

#: Module (file name under tests/) → the use-case tests and the fixtures they need.
USE_CASES: dict[str, tuple[str, ...]] = {
    "test_ingest.py": (
        "test_three_phone_formats_are_one_person",
        "test_household_sharing_a_phone_is_two_contacts_for_review",
        "test_email_to_a_phone_to_b_joins_a_and_flags_the_pair",
        "test_reingest_changes_nothing",
        "test_record_without_identity_is_quarantined_and_the_rest_goes_in",
        "test_implied_stage_moves_and_a_persons_move_wins",
    ),
    "test_inbox.py": ("test_reprocess_replaces_the_interactions_of_one_payload",),
    "test_session.py": ("test_set_stage_writes_one_entry_in_the_changes_own_transaction",),
    "test_coordination.py": (
        "test_log_a_call_derives_the_channel",
        "test_a_logged_booking_moves_the_stage_like_an_ingested_one",
        "test_task_list_filters_and_order",
        "test_complete_task",
        "test_assign_sets_the_clear_owner_and_audits_it",
        "test_saturday_lead_called_monday_0830_has_thirty_minutes",
        "test_what_counts_as_an_answer",
        "test_pipeline_report_and_summary_show_the_median",
    ),
    "test_segments.py": (
        "story",
        "test_had_email_opened_within_90_days_in_chicago",
        "test_every_field_of_the_spec",
        "test_preview_decrypts_names_and_audits_each_contact_shown",
        "test_segment_ids_pages_through_all_in_id_order",
    ),
    "test_attribution.py": (
        "practice",
        "test_four_models_by_channel_group",
        "test_rows_are_sorted_and_count_the_conversions_they_share",
        "test_offline_touches_count_and_outbound_calls_do_not",
        "test_steps_of_the_ladder",
    ),
    "test_scoring.py": (
        "test_scores_update_live_after_ingest_and_keep_their_reasons",
        "test_each_contact_is_rescored_once_per_ingest_batch",
        "test_score_top_orders_by_score_skips_merged_and_filters_stages",
        "test_last_touches_read_the_latest_interaction",
    ),
}


def _load(file_name: str, folder: Path = HERE) -> ModuleType:
    """The test module ``file_name`` of ``folder`` (default: this one), loaded under a private name."""
    spec = importlib.util.spec_from_file_location(f"_app_contract_{file_name[:-3]}", folder / file_name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The shared configuration of ``conftest.py`` (BASE_CONFIG), read from the same file.
_CONFTEST = _load("conftest.py", HERE.parent)

for _file, _names in USE_CASES.items():
    _module = _load(_file)
    for _name in _names:
        globals()[_name] = getattr(_module, _name)


@pytest.fixture(params=["sqlite", "mongomock"])
def make_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., CareCRM]]:
    """``make_app(url=None, **sections)`` of ``conftest.py`` on the parametrized backend:
    a fresh SQLite file, or a fresh mongomock database forgotten afterwards."""
    mock_name = f"app-contract-{uuid.uuid4().hex}"
    default_url = f"sqlite:///{tmp_path / 'carecrm.db'}" if request.param == "sqlite" else f"mongomock://{mock_name}"
    apps: list[CareCRM] = []

    def factory(url: str | None = None, **sections: Any) -> CareCRM:
        doc = {**_CONFTEST.BASE_CONFIG, **sections}
        doc["storage"] = {"url": url or default_url}
        keyfile = tmp_path / "carecrm.keys"
        if not keyfile.exists():
            KeyRing.generate().write_file(keyfile)
        app = CareCRM(settings_from_dict(doc, base_dir=tmp_path), load_entrypoints=False)
        app.create_schema()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()
    forget_mock(mock_name)
