from __future__ import annotations

from pathlib import Path

import pytest

from carecrm.core.identity.normalize import (
    IdentityError,
    is_low_confidence_name,
    names_clearly_disagree,
    normalize_email,
    normalize_name,
    normalize_phone,
    split_full_name,
)


@pytest.mark.parametrize("raw", ["+1 (312) 555-0142", "312.555.0142", "+13125550142", "(312) 555-0142", "13125550142"])
def test_phone_formats_are_one_number(raw: str) -> None:
    assert normalize_phone(raw, "US")[0] == "+13125550142"


def test_fictional_555_number_is_possible_but_not_valid() -> None:
    assert normalize_phone("15550000000", "US") == ("+15550000000", False)


def test_local_only_and_garbage_numbers_are_refused_without_echoing() -> None:
    for raw in ("555-0142", "hello", "12"):
        with pytest.raises(IdentityError) as info:
            normalize_phone(raw, "US")
        assert raw not in str(info.value)


def test_uk_number_in_uk_region() -> None:
    assert normalize_phone("020 7946 0000", "GB")[0] == "+442079460000"


def test_email_is_trimmed_and_lowercased_whole() -> None:
    assert normalize_email("  Maria.Placeholder@Example.COM ") == "maria.placeholder@example.com"


def test_bad_email_reason_has_no_value() -> None:
    with pytest.raises(IdentityError) as info:
        normalize_email("maria.placeholder-at-example.com")
    assert "maria" not in str(info.value)


def test_name_folding() -> None:
    assert normalize_name("  José   O'Neil ") == "jose o'neil"
    assert normalize_name("   ") is None


@pytest.mark.parametrize(
    "text", ["SKYPE CALLER", "WIRELESS CALLER", "CHICAGO IL", "Visitor 8812", "FirstName LastName", None]
)
def test_low_confidence_names(text: str | None) -> None:
    assert is_low_confidence_name(text)


@pytest.mark.parametrize("text", ["Maria Placeholder", "Jane", "Zaphod Placeholder"])
def test_real_names_are_confident(text: str) -> None:
    assert not is_low_confidence_name(text)


def test_names_disagree_only_clearly() -> None:
    assert names_clearly_disagree("Maria", "Sofia")
    assert not names_clearly_disagree("Maria", "maria")
    assert not names_clearly_disagree("M.", "Maria")
    assert not names_clearly_disagree("Chris", "Christopher")
    assert not names_clearly_disagree(None, "Maria")
    assert not names_clearly_disagree("SKYPE", "Maria", confident_a=False)


def test_split_full_name() -> None:
    assert split_full_name("Maria Placeholder") == ("Maria", "Placeholder")
    assert split_full_name("Placeholder, Maria") == ("Maria", "Placeholder")
    assert split_full_name("Cher") == ("Cher", None)
    assert split_full_name("") == (None, None)


def test_a_reserved_domain_is_refused_with_its_real_reason() -> None:
    """email-validator refuses RFC 6761 special-use names; the reason says so (the issue
    #8 trap: it used to read "no @-sign"), and never quotes the address."""
    for address in ("jane.placeholder@example.test", "ops@printer.localhost"):
        with pytest.raises(IdentityError) as caught:
            normalize_email(address)
        assert "special-use or reserved" in str(caught.value) and "@-sign" not in str(caught.value)
        assert "placeholder" not in str(caught.value) and "printer" not in str(caught.value)
    with pytest.raises(IdentityError, match="no @-sign"):
        normalize_email("not-an-address")


def test_a_test_installation_may_allow_the_test_domain(tmp_path: Path) -> None:
    from carecrm.core import CareCRM, LeadEvent
    from carecrm.core.config import settings_from_dict
    from carecrm.core.errors import ConfigError
    from carecrm.core.model.domain import Actor

    assert normalize_email("Jane@Example.TEST", allow_test_domains=True) == "jane@example.test"
    with pytest.raises(IdentityError):
        normalize_email("ops@printer.localhost", allow_test_domains=True)  # only "test" is for testing
    with pytest.raises(ConfigError, match="allow_test_domains must be true or false"):
        settings_from_dict({"storage": {"url": "sqlite://"}, "ingest": {"allow_test_domains": "yes"}})

    def ingest(allow: bool) -> tuple[int, list[str]]:
        doc = {"storage": {"url": f"sqlite:///{tmp_path / f'{allow}.db'}"}, "ingest": {"allow_test_domains": allow}}
        from carecrm.core.privacy.crypto import KeyRing

        app = CareCRM(settings_from_dict(doc, base_dir=tmp_path), keys=KeyRing.generate(), load_entrypoints=False)
        app.create_schema()
        lead = LeadEvent(source="webform", record_ref="r1", emails=("jane@example.test",), first_name="Jane")
        report = app.ingest([lead], actor=Actor.parse("tester:admin"))
        found = app.find_contacts(email="jane@example.test", actor=Actor.parse("tester:admin")) if allow else []
        app.close()
        return len(found), report.warnings

    found, warnings = ingest(True)
    assert found == 1 and not warnings
    found, warnings = ingest(False)
    assert any("special-use or reserved" in w and "email[0]" in w for w in warnings)
