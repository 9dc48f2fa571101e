"""The encryption boundary: domain objects ⇄ stored records.

Every backend receives records made here and returns records read back here, so no
backend ever sees plaintext personal data (the encryption boundary of ``docs/index.md``).
Personal fields are encrypted under the contact's data key; identities, names and
contact points get blind indexes under the blind-index key.  Associated data binds each
ciphertext to its record id and field.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from datetime import date
from typing import Any

import attrs
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carecrm.core.errors import CryptoError, UnstorableValue
from carecrm.core.identity.normalize import normalize_name
from carecrm.core.model.domain import (
    Appointment,
    ConsentEvent,
    Contact,
    Identity,
    Interaction,
    Note,
    RawPayload,
    StageChange,
    Task,
    Touchpoint,
)
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import (
    AppointmentRecord,
    ConsentRecord,
    ContactRecord,
    IdentityRecord,
    InboxRecord,
    InteractionRecord,
    NoteRecord,
    StageChangeRecord,
    TaskRecord,
)
from carecrm.core.model.serialization import compact
from carecrm.core.model.timeutil import utcnow
from carecrm.core.privacy.crypto import KeyRing

_PII_FIELDS = ("first_name", "last_name", "street_address", "postal_code", "region", "country", "sex")
_TOUCHPOINT_FIELDS = tuple(a.name for a in attrs.fields(Touchpoint))


def _dumps(value: Any, field: str) -> bytes:
    """Compact UTF-8 JSON of a value to encrypt.

    :raises UnstorableValue: naming ``field`` (for a dict of fields, the first key whose
        value fails) when the value holds a lone surrogate, nests too deeply or is not JSON.
    """
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError, TypeError, ValueError) as exc:
        if isinstance(value, dict):
            for key, item in value.items():
                try:
                    json.dumps(item, ensure_ascii=False).encode()
                except (UnicodeEncodeError, RecursionError, TypeError, ValueError):
                    field = str(key) if field == "pii" else f"{field}.{key}"
                    break
        raise UnstorableValue(field, _unstorable_reason(exc)) from None


def _utf8(text: str, field: str) -> bytes:
    """UTF-8 bytes of a text to encrypt.

    :raises UnstorableValue: naming ``field`` when the text holds a lone surrogate.
    """
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise UnstorableValue(field, "contains a lone surrogate (broken Unicode)") from None


def _unstorable_reason(exc: BaseException) -> str:
    if isinstance(exc, UnicodeEncodeError):
        return "contains a lone surrogate (broken Unicode)"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"not a JSON value ({type(exc).__name__})"


def postal_prefix(postal_code: str | None) -> str | None:
    """The clear part of a postal code kept for segmenting: the first three characters of
    a US ZIP (the HIPAA Safe Harbor 3-digit rule, 45 CFR 164.514(b)(2)(i)(B)) or the
    outward code of a UK postcode."""
    if not postal_code:
        return None
    text = postal_code.strip().upper()
    if " " in text:
        return text.split(" ")[0]
    return text[:3] or None


@attrs.frozen
class ContactKey:
    """A contact's data key, unwrapped for this process: the AES-GCM object plus the
    wrapped form and master-key version to store."""

    aes: AESGCM
    version: str
    wrapped: bytes


class RecordMapper:
    """Turns domain objects into stored records and back, encrypting on the way.

    :param keys: the practice's key ring.
    :param cache_size: how many unwrapped contact keys to keep (an LRU), so a batch that
        touches the same contacts unwraps each key once.  The caches are shared by
        concurrent callers of one app (the LRU under a lock).
    """

    def __init__(self, keys: KeyRing, *, cache_size: int = 4096) -> None:
        self.keys = keys
        self._cache: OrderedDict[tuple[uuid.UUID, bytes], ContactKey] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._names: dict[tuple[str | None, str | None], tuple[str | None, str | None]] = {}

    # ------------------------------------------------------------------ keys

    def new_contact_key(self) -> ContactKey:
        """A fresh data key for a new contact, wrapped by the current master key."""
        raw = self.keys.new_data_key()
        version, wrapped = self.keys.wrap(raw)
        return ContactKey(AESGCM(raw), version, wrapped)

    def key_of(self, record: ContactRecord) -> ContactKey:
        """The unwrapped data key of a stored contact.

        :raises CryptoError: if the contact was erased or the master key is wrong.
        """
        if record.wrapped_key is None or record.key_version is None:
            raise CryptoError("this contact's data key was erased (crypto-shredded)")
        cache_key = (record.id, record.wrapped_key)
        with self._lock:
            hit = self._cache.get(cache_key)
            if hit is not None:
                self._cache.move_to_end(cache_key)
                return hit
        raw = self.keys.unwrap(record.key_version, record.wrapped_key)
        ck = ContactKey(AESGCM(raw), record.key_version, record.wrapped_key)
        with self._lock:
            self._cache[cache_key] = ck
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ck

    def remember(self, contact_id: uuid.UUID, key: ContactKey) -> None:
        """Cache a key made by :meth:`new_contact_key` for a contact being created."""
        with self._lock:
            self._cache[(contact_id, key.wrapped)] = key

    # ------------------------------------------------------------------ blind indexes

    def identity_bidx(self, kind: str, normalized: str) -> str:
        """Blind index of a normalized identity (``email``, ``phone``, ``external:<system>``)."""
        return self.keys.blind_index(kind, normalized)

    def name_bidx(self, first: str | None, last: str | None) -> tuple[str | None, str | None]:
        """Blind indexes of the folded full name and family name (None when unknown)."""
        cached = self._names.get((first, last))
        if cached is not None:
            return cached
        if len(self._names) > 4096:
            self._names.clear()
        self._names[(first, last)] = result = self._name_bidx(first, last)
        return result

    def _name_bidx(self, first: str | None, last: str | None) -> tuple[str | None, str | None]:
        full = normalize_name(" ".join(p for p in (first, last) if p))
        fam = normalize_name(last)
        return (
            self.keys.blind_index("name", full) if full else None,
            self.keys.blind_index("family_name", fam) if fam else None,
        )

    # ------------------------------------------------------------------ contacts

    def contact_to_record(self, contact: Contact, key: ContactKey) -> ContactRecord:
        """Encrypt a contact's personal fields under ``key`` into a :class:`ContactRecord`."""
        pii: dict[str, Any] = {f: getattr(contact, f) for f in _PII_FIELDS if getattr(contact, f) is not None}
        if contact.date_of_birth is not None:
            pii["date_of_birth"] = contact.date_of_birth.isoformat()
        pii_enc = KeyRing.encrypt(key.aes, _dumps(pii, "pii"), f"contact:{contact.id}:pii".encode()) if pii else None
        name_bidx, family_bidx = self.name_bidx(contact.first_name, contact.last_name)
        return ContactRecord(
            id=contact.id,
            created_at=contact.created_at,
            updated_at=contact.updated_at,
            version=contact.version,
            status=contact.status,
            key_version=key.version,
            wrapped_key=key.wrapped,
            pii_enc=pii_enc,
            name_bidx=name_bidx,
            family_name_bidx=family_bidx,
            name_confidence=contact.name_confidence,
            pipeline=contact.pipeline,
            stage=contact.stage,
            stage_changed_at=contact.stage_changed_at,
            service_interest=contact.service_interest,
            location=contact.location,
            city=contact.city,
            postal_prefix=postal_prefix(contact.postal_code),
            owner=contact.owner,
            score=contact.score,
            first_source=contact.first_source,
        )

    def contact_from_record(self, record: ContactRecord, identities: list[IdentityRecord] | None = None) -> Contact:
        """Decrypt a stored contact (and its identities) into a :class:`Contact`.

        An erased contact comes back with no personal fields.
        """
        pii: dict[str, Any] = {}
        ids: list[Identity] = []
        if record.wrapped_key is not None:
            key = self.key_of(record)
            if record.pii_enc is not None:
                pii = json.loads(KeyRing.decrypt(key.aes, record.pii_enc, f"contact:{record.id}:pii".encode()))
            for ident in identities or ():
                ids.append(self.identity_from_record(ident, key))
        dob = pii.pop("date_of_birth", None)
        return Contact(
            id=record.id,
            created_at=record.created_at,
            updated_at=record.updated_at,
            version=record.version,
            status=record.status,
            name_confidence=record.name_confidence,
            pipeline=record.pipeline,
            stage=record.stage,
            stage_changed_at=record.stage_changed_at,
            service_interest=record.service_interest,
            location=record.location,
            city=record.city,
            owner=record.owner,
            score=record.score,
            first_source=record.first_source,
            date_of_birth=date.fromisoformat(dob) if dob else None,
            identities=tuple(ids),
            **{k: v for k, v in pii.items() if k in _PII_FIELDS},
        )

    # ------------------------------------------------------------------ identities

    def identity_to_record(
        self,
        identity: Identity,
        contact_id: uuid.UUID,
        key: ContactKey,
        *,
        record_id: uuid.UUID | None = None,
        bidx: str | None = None,
    ) -> IdentityRecord:
        """Encrypt an identity's value (and display form) and compute its blind index
        (``bidx`` when the caller computed it already)."""
        rid = record_id or new_id()
        value = {"v": identity.value}
        if identity.display and identity.display != identity.value:
            value["d"] = identity.display
        return IdentityRecord(
            id=rid,
            contact_id=contact_id,
            kind=identity.kind,
            bidx=bidx or self.identity_bidx(identity.kind, identity.value),
            value_enc=KeyRing.encrypt(key.aes, _dumps(value, "identity"), f"identity:{rid}".encode()),
            source=identity.source,
            verified=identity.verified,
            valid=identity.valid,
            created_at=utcnow(),
        )

    def identity_from_record(self, record: IdentityRecord, key: ContactKey) -> Identity:
        """Decrypt an identity."""
        value: dict[str, str] = {"v": ""}
        if record.value_enc is not None:
            value = json.loads(KeyRing.decrypt(key.aes, record.value_enc, f"identity:{record.id}".encode()))
        return Identity(
            kind=record.kind,
            value=value["v"],
            display=value.get("d"),
            valid=record.valid,
            verified=record.verified,
            source=record.source,
        )

    # ------------------------------------------------------------------ timeline

    def interaction_to_record(self, interaction: Interaction, key: ContactKey) -> InteractionRecord:
        """Encrypt an interaction's body; touchpoint and attributes stay clear JSON."""
        body_enc = (
            KeyRing.encrypt(key.aes, _utf8(interaction.body, "body"), f"interaction:{interaction.id}:body".encode())
            if interaction.body is not None
            else None
        )
        tp = compact(attrs.asdict(interaction.touchpoint))
        return InteractionRecord(
            id=interaction.id,
            contact_id=interaction.contact_id,
            kind=interaction.kind,
            occurred_at=interaction.occurred_at,
            recorded_at=interaction.recorded_at,
            source=interaction.source,
            idempotency_key=interaction.idempotency_key,
            channel=interaction.channel,
            direction=interaction.direction,
            location=interaction.location,
            campaign=interaction.touchpoint.campaign,
            channel_group=interaction.touchpoint.channel_group,
            touchpoint=tp,
            attributes=dict(interaction.attributes),
            body_enc=body_enc,
            actor=interaction.actor,
            inbox_id=interaction.inbox_id,
        )

    def interaction_from_record(self, record: InteractionRecord, key: ContactKey | None) -> Interaction:
        """Decrypt an interaction; with ``key`` None (an erased contact) the body is None."""
        body = None
        if record.body_enc is not None and key is not None:
            body = KeyRing.decrypt(key.aes, record.body_enc, f"interaction:{record.id}:body".encode()).decode()
        tp = Touchpoint(**{k: v for k, v in record.touchpoint.items() if k in _TOUCHPOINT_FIELDS})
        return Interaction(
            id=record.id,
            contact_id=record.contact_id,
            kind=record.kind,
            occurred_at=record.occurred_at,
            recorded_at=record.recorded_at,
            source=record.source,
            idempotency_key=record.idempotency_key,
            channel=record.channel,
            direction=record.direction,
            location=record.location,
            touchpoint=tp,
            attributes=record.attributes,
            body=body,
            actor=record.actor,
            inbox_id=record.inbox_id,
        )

    # ------------------------------------------------------------------ the rest

    @staticmethod
    def stage_change_to_record(change: StageChange) -> StageChangeRecord:
        """Stage changes hold no personal data: a field-by-field copy."""
        return StageChangeRecord(**attrs.asdict(change, recurse=False))

    @staticmethod
    def stage_change_from_record(record: StageChangeRecord) -> StageChange:
        """The inverse of :meth:`stage_change_to_record`."""
        return StageChange(**attrs.asdict(record, recurse=False))

    @staticmethod
    def appointment_to_record(appt: Appointment) -> AppointmentRecord:
        """Appointments hold no free text: a field-by-field copy."""
        return AppointmentRecord(**attrs.asdict(appt, recurse=False))

    @staticmethod
    def appointment_from_record(record: AppointmentRecord) -> Appointment:
        """The inverse of :meth:`appointment_to_record`."""
        return Appointment(**attrs.asdict(record, recurse=False))

    def consent_to_record(self, event: ConsentEvent, key: ContactKey | None) -> ConsentRecord:
        """Blind-index the contact point and encrypt the evidence (under the contact's key)."""
        evidence_enc = None
        if event.evidence and key is not None:
            evidence_enc = KeyRing.encrypt(key.aes, _dumps(event.evidence, "evidence"), f"consent:{event.id}".encode())
        return ConsentRecord(
            id=event.id,
            contact_id=event.contact_id,
            contact_point_bidx=self.identity_bidx(event.contact_point_kind, event.contact_point),
            channel=event.channel,
            purpose=event.purpose,
            status=event.status,
            occurred_at=event.occurred_at,
            recorded_at=event.recorded_at,
            source=event.source,
            idempotency_key=event.idempotency_key,
            evidence_enc=evidence_enc,
            regime=dict(event.regime),
            expires_at=event.expires_at,
        )

    def consent_evidence(self, record: ConsentRecord, key: ContactKey | None) -> dict[str, Any]:
        """Decrypt a consent event's evidence ({} when none or the contact was erased)."""
        if record.evidence_enc is None or key is None:
            return {}
        data: dict[str, Any] = json.loads(
            KeyRing.decrypt(key.aes, record.evidence_enc, f"consent:{record.id}".encode())
        )
        return data

    @staticmethod
    def note_aad(note_id: uuid.UUID) -> bytes:
        """Associated data of a note's ciphertext."""
        return f"note:{note_id}".encode()

    def note_to_record(self, note: Note, key: ContactKey) -> NoteRecord:
        """Encrypt a note's text."""
        return NoteRecord(
            id=note.id,
            contact_id=note.contact_id,
            created_at=note.created_at,
            author=note.author,
            body_enc=KeyRing.encrypt(key.aes, _utf8(note.text, "text"), self.note_aad(note.id)),
        )

    def note_from_record(self, record: NoteRecord, key: ContactKey | None) -> Note:
        """Decrypt a note ("" when the contact was erased)."""
        text = "" if key is None else KeyRing.decrypt(key.aes, record.body_enc, self.note_aad(record.id)).decode()
        return Note(
            id=record.id,
            contact_id=record.contact_id,
            created_at=record.created_at,
            author=record.author,
            text=text,
        )

    def task_to_record(self, task: Task, key: ContactKey) -> TaskRecord:
        """Encrypt a task's text."""
        body = KeyRing.encrypt(key.aes, _utf8(task.text, "text"), f"task:{task.id}".encode()) if task.text else None
        fields = attrs.asdict(task, recurse=False)
        fields.pop("text")
        return TaskRecord(**fields, body_enc=body)

    def task_from_record(self, record: TaskRecord, key: ContactKey | None) -> Task:
        """Decrypt a task."""
        text = None
        if record.body_enc is not None and key is not None:
            text = KeyRing.decrypt(key.aes, record.body_enc, f"task:{record.id}".encode()).decode()
        fields = attrs.asdict(record, recurse=False)
        fields.pop("body_enc")
        return Task(**fields, text=text)

    # ------------------------------------------------------------------ inbox

    def inbox_to_record(self, inbox_id: uuid.UUID, source: str, payload: RawPayload) -> InboxRecord:
        """Encrypt a raw payload (body, content type, headers, URL) under its own data key;
        only the source, times and status stay clear (headers and URLs can carry phone
        numbers and tokens).

        The body is bytes and kept byte for byte; the envelope is ASCII JSON (``\\uXXXX``
        escapes), so headers, a URL or a file name holding text that UTF-8 cannot encode
        (a lone surrogate; Python's form of a non-UTF-8 file name or argument) are kept
        exactly as they arrived and never stop the payload from being stored."""
        raw = self.keys.new_data_key()
        version, wrapped = self.keys.wrap(raw)
        envelope = {
            "content_type": payload.content_type,
            "headers": payload.headers,
            "url": payload.url,
            "origin": payload.origin,
        }
        head = json.dumps(envelope, separators=(",", ":"), ensure_ascii=True).encode("ascii")
        blob = head + b"\n" + payload.body
        return InboxRecord(
            id=inbox_id,
            source=source,
            received_at=payload.received_at,
            key_version=version,
            wrapped_key=wrapped,
            payload_enc=KeyRing.encrypt(raw, blob, f"inbox:{inbox_id}".encode()),
            digest=self.keys.digest(source.encode() + b"\x1f" + payload.body),
        )

    def inbox_payload(self, record: InboxRecord) -> RawPayload:
        """Decrypt a stored payload back into the :class:`RawPayload` that arrived."""
        raw = self.keys.unwrap(record.key_version, record.wrapped_key)
        blob = KeyRing.decrypt(raw, record.payload_enc, f"inbox:{record.id}".encode())
        head, _, body = blob.partition(b"\n")
        env = json.loads(head)
        return RawPayload(
            body=body,
            content_type=env.get("content_type") or "application/octet-stream",
            headers=env.get("headers") or {},
            url=env.get("url"),
            received_at=record.received_at,
            origin=env.get("origin"),
        )
