from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from carecrm.core.errors import CryptoError
from carecrm.core.privacy.crypto import KeyRing


def test_key_file_is_owner_only_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "carecrm.keys"
    ring = KeyRing.generate()
    ring.write_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(CryptoError, match="refusing to overwrite"):
        KeyRing.generate().write_file(path)
    again = KeyRing.from_file(path)
    assert again.blind_index("email", "a@example.com") == ring.blind_index("email", "a@example.com")


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    KeyRing.generate().write_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(CryptoError, match="chmod 600"):
        KeyRing.from_file(path)


def test_missing_and_malformed_key_material(tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match="not found"):
        KeyRing.from_file(tmp_path / "nope")
    with pytest.raises(CryptoError, match="not JSON"):
        KeyRing.from_json("garbage")
    with pytest.raises(CryptoError, match="format"):
        KeyRing.from_json('{"format": "other"}')


def test_wrap_unwrap_and_wrong_master_key() -> None:
    a, b = KeyRing.generate(), KeyRing.generate()
    dk = a.new_data_key()
    version, wrapped = a.wrap(dk)
    assert a.unwrap(version, wrapped) == dk
    with pytest.raises(CryptoError, match="does not match"):
        b.unwrap(version, wrapped)
    with pytest.raises(CryptoError, match="erased"):
        a.unwrap(version, None)


def test_ciphertext_is_bound_to_its_field() -> None:
    dk = KeyRing.new_data_key()
    blob = KeyRing.encrypt(dk, b"inquiry text", b"interaction:1:body")
    assert KeyRing.decrypt(dk, blob, b"interaction:1:body") == b"inquiry text"
    with pytest.raises(CryptoError):
        KeyRing.decrypt(dk, blob, b"interaction:2:body")


def test_blind_index_is_keyed_and_domain_separated() -> None:
    a, b = KeyRing.generate(), KeyRing.generate()
    assert a.blind_index("email", "x@example.com") != b.blind_index("email", "x@example.com")
    assert a.blind_index("email", "x") != a.blind_index("phone", "x")
    assert len(a.blind_index("phone", "+13125550142")) == 64


def test_check_value_matches_only_the_same_keys() -> None:
    a, b = KeyRing.generate(), KeyRing.generate()
    assert a.matches_check_value(a.check_value())
    assert not b.matches_check_value(a.check_value())
    assert repr(a) == "KeyRing(current='k1', versions=['k1'])"  # no key material in the repr
