from __future__ import annotations

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
