"""Field encryption and blind indexes (``docs/index.md``, "Privacy model in one paragraph").

* AES-256-GCM (NIST SP 800-38D, from ``cryptography``) with a random 96-bit nonce
  prepended to the ciphertext; associated data binds a ciphertext to its record and
  field, so it cannot be moved to another record.
* Envelope encryption: each contact (and each inbox payload) has its own 256-bit data
  key, wrapped by the practice's master key (AES-GCM too).  Deleting a contact's
  wrapped key crypto-shreds its data.  Master keys are versioned so they can be rotated.
* Blind indexes: keyed HMAC-SHA256 (RFC 2104) of ``kind`` + the normalized value, under
  a separate key, as lowercase hex (64 characters): equality look-up without plaintext.
* The audit log is chained with HMAC-SHA256 under a third key.

Safeguard references: HIPAA Security Rule 45 CFR 164.312(a)(2)(iv) (encryption and
decryption) and 164.312(c)(1) (integrity).

The key file (written by ``carecrm init`` with mode 0600) is JSON::

    {"format": "carecrm-keys/1", "current": "k1",
     "master_keys": {"k1": "<base64 32 bytes>"},
     "blind_index_key": "<base64 32 bytes>", "audit_key": "<base64 32 bytes>"}

It is read from ``CARECRM_KEYS`` (the JSON itself) or from a file path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carecrm.core.errors import CryptoError

KEY_FORMAT = "carecrm-keys/1"
_NONCE = 12
_WRAP_AAD = b"carecrm:data-key"


def _b64key(value: Any, what: str) -> bytes:
    try:
        raw = base64.b64decode(str(value), validate=True)
    except (ValueError, TypeError):
        raise CryptoError(f"{what} is not valid base64") from None
    if len(raw) != 32:
        raise CryptoError(f"{what} must be 32 bytes (256 bits), found {len(raw)}")
    return raw


class KeyRing:
    """The practice's keys: versioned master keys, the blind-index key, the audit key.

    :param master_keys: version name → 32-byte AES key.
    :param current: the version that wraps new data keys.
    :param blind_index_key: 32-byte HMAC key for blind indexes.
    :param audit_key: 32-byte HMAC key for the audit chain.
    :raises CryptoError: if ``current`` is not among ``master_keys``.
    """

    def __init__(
        self,
        master_keys: dict[str, bytes],
        current: str,
        blind_index_key: bytes,
        audit_key: bytes,
    ) -> None:
        if current not in master_keys:
            raise CryptoError(f"current master key version {current!r} is not in the key file")
        self._masters = {v: AESGCM(k) for v, k in master_keys.items()}
        self._master_raw = dict(master_keys)
        self.current = current
        self._bidx_key = blind_index_key
        self._audit_key = audit_key

    def __repr__(self) -> str:
        return f"KeyRing(current={self.current!r}, versions={sorted(self._masters)!r})"

    # ------------------------------------------------------------------ construction

    @classmethod
    def generate(cls) -> KeyRing:
        """New random keys (``os.urandom``), master version ``k1``."""
        return cls({"k1": os.urandom(32)}, "k1", os.urandom(32), os.urandom(32))

    def to_json(self) -> str:
        """The key file's JSON text (secret: write it with mode 0600)."""
        doc = {
            "format": KEY_FORMAT,
            "current": self.current,
            "master_keys": {v: base64.b64encode(k).decode() for v, k in self._master_raw.items()},
            "blind_index_key": base64.b64encode(self._bidx_key).decode(),
            "audit_key": base64.b64encode(self._audit_key).decode(),
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, origin: str = "key material") -> KeyRing:
        """Parse key-file JSON.  :raises CryptoError: naming ``origin`` and what is wrong."""
        try:
            doc = json.loads(text)
        except ValueError:
            raise CryptoError(f"{origin} is not a carecrm key file (not JSON)") from None
        if not isinstance(doc, dict) or doc.get("format") != KEY_FORMAT:
            raise CryptoError(f"{origin} is not a carecrm key file (format {KEY_FORMAT!r} expected)")
        try:
            masters = {str(v): _b64key(k, f"{origin}: master key {v}") for v, k in doc["master_keys"].items()}
            return cls(
                masters,
                str(doc["current"]),
                _b64key(doc["blind_index_key"], f"{origin}: blind_index_key"),
                _b64key(doc["audit_key"], f"{origin}: audit_key"),
            )
        except (KeyError, AttributeError) as exc:
            raise CryptoError(f"{origin} lacks {exc}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Read a key file.

        :raises CryptoError: if it is missing, unreadable, readable by group or others
            (it must be 0600: it unlocks every contact's data), or malformed.
        """
        p = Path(path)
        try:
            mode = p.stat().st_mode
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CryptoError(
                f"key file {p} not found: restore it from your backup (no other key can read data "
                "written with it), set CARECRM_KEYS / CARECRM_KEY_FILE, or for a new practice run "
                "`carecrm init` in an empty folder"
            ) from None
        except OSError as exc:
            raise CryptoError(f"key file {p} cannot be read: {exc.strerror}") from None
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CryptoError(f"key file {p} is readable by other users: run `chmod 600 {p}`")
        return cls.from_json(text, origin=f"key file {p}")

    def write_file(self, path: str | os.PathLike[str]) -> None:
        """Write the key file with owner-only permissions (0600), refusing to overwrite.

        :raises CryptoError: if the file exists.
        """
        p = Path(path)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CryptoError(f"key file {p} exists already; refusing to overwrite it") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())

    # ------------------------------------------------------------------ operations

    def check_value(self) -> str:
        """A value stored in the database that proves these keys are the ones it was written
        with (HMAC of a constant under each key; reveals nothing about the keys)."""
        parts = [
            hmac.new(self._master_raw[self.current], b"carecrm:check", hashlib.sha256).hexdigest()[:16],
            hmac.new(self._bidx_key, b"carecrm:check", hashlib.sha256).hexdigest()[:16],
        ]
        return f"{self.current}:{parts[0]}:{parts[1]}"

    def matches_check_value(self, stored: str) -> bool:
        """True when ``stored`` (from :meth:`check_value` of possibly another current
        version) was made by keys in this ring."""
        try:
            version, master_part, bidx_part = stored.split(":")
        except ValueError:
            return False
        raw = self._master_raw.get(version)
        if raw is None:
            return False
        mine_master = hmac.new(raw, b"carecrm:check", hashlib.sha256).hexdigest()[:16]
        mine_bidx = hmac.new(self._bidx_key, b"carecrm:check", hashlib.sha256).hexdigest()[:16]
        return hmac.compare_digest(mine_master, master_part) and hmac.compare_digest(mine_bidx, bidx_part)

    @staticmethod
    def new_data_key() -> bytes:
        """A fresh random 256-bit data key."""
        return os.urandom(32)

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap a data key with the current master key: ``(version, nonce + ciphertext)``."""
        nonce = os.urandom(_NONCE)
        return self.current, nonce + self._masters[self.current].encrypt(nonce, data_key, _WRAP_AAD)

    def unwrap(self, version: str | None, wrapped: bytes | None) -> bytes:
        """Unwrap a data key.

        :raises CryptoError: if the master-key version is not in the ring, the wrapped key
            is missing (an erased contact) or does not authenticate (wrong key).
        """
        if wrapped is None or version is None:
            raise CryptoError("this record's data key was erased (crypto-shredded)")
        master = self._masters.get(version)
        if master is None:
            raise CryptoError(f"master key version {version!r} is not in the key ring")
        try:
            return master.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _WRAP_AAD)
        except InvalidTag:
            raise CryptoError(f"master key {version!r} does not match this database (wrong key file?)") from None

    @staticmethod
    def encrypt(data_key: bytes | AESGCM, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM encrypt under a data key: ``nonce(12) + ciphertext + tag(16)``."""
        aes = data_key if isinstance(data_key, AESGCM) else AESGCM(data_key)
        nonce = os.urandom(_NONCE)
        return nonce + aes.encrypt(nonce, plaintext, aad)

    @staticmethod
    def decrypt(data_key: bytes | AESGCM, blob: bytes, aad: bytes) -> bytes:
        """Decrypt what :meth:`encrypt` made.  :raises CryptoError: if it does not
        authenticate (wrong key, or a ciphertext moved from another record or field)."""
        aes = data_key if isinstance(data_key, AESGCM) else AESGCM(data_key)
        try:
            return aes.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise CryptoError("a stored ciphertext failed authentication (wrong key or tampered data)") from None

    def blind_index(self, kind: str, normalized: str) -> str:
        """HMAC-SHA256 hex of ``kind`` and the normalized value (domain-separated by kind)."""
        return hmac.new(self._bidx_key, f"{kind}\x1f{normalized}".encode(), hashlib.sha256).hexdigest()

    def audit_mac(self, prev_hash: str | None, entry: bytes) -> str:
        """The audit-chain link: HMAC-SHA256 hex of the previous hash and this entry."""
        return hmac.new(self._audit_key, (prev_hash or "").encode() + b"\x1e" + entry, hashlib.sha256).hexdigest()

    def digest(self, data: bytes) -> str:
        """A keyed hash of raw bytes (inbox re-delivery detection), hex."""
        return hmac.new(self._bidx_key, b"inbox\x1f" + data, hashlib.sha256).hexdigest()
