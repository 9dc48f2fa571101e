"""The built-in exact matcher (``docs/vocabulary.md``, "Identities and matching"), the ``trylast`` answer of
``carecrm_match_contact``.

An email, phone or external id that matches joins the stored contact, unless the names
clearly disagree (low-confidence names never disagree): then a new contact is made and
the pair goes to review as a possible household member or duplicate.  When identities
point at different contacts (email → A, phone → B) the event joins the contact of the
strongest identity (external id, then email, then phone) and the other pair goes to
review; nothing is merged automatically.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from carecrm.core.identity.matching import MatchCandidate, MatchResult
from carecrm.core.identity.normalize import names_clearly_disagree
from carecrm.core.model.records import ACTIVE, ContactRecord
from carecrm.core.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from carecrm.core.app import CareCRM
    from carecrm.core.storage.contract import UnitOfWork


def _kind_rank(kind: str) -> int:
    if kind.startswith("external:"):
        return 0
    return {"email": 1, "phone": 2}.get(kind, 3)


@hookimpl(trylast=True)
def carecrm_match_contact(candidate: MatchCandidate, uow: UnitOfWork, app: CareCRM) -> MatchResult:
    """Match by exact blind index; see the module docstring for the rule."""
    keys = sorted(candidate.identity_keys, key=lambda k: _kind_rank(k[0]))
    found = uow.identities.find_many(keys)
    by_key: dict[tuple[str, str], list[uuid.UUID]] = {}
    for ident in found:
        by_key.setdefault((ident.kind, ident.bidx), []).append(ident.contact_id)
    all_ids = {cid for ids in by_key.values() for cid in ids}
    if not all_ids:
        return MatchResult(contact_id=None, rule="new")
    records: dict[uuid.UUID, ContactRecord] = uow.contacts.get_many(all_ids)
    # follow merges to the surviving contact
    resolved: dict[uuid.UUID, ContactRecord] = {}
    for cid, rec in records.items():
        hops = 0
        while rec.status != ACTIVE and rec.merged_into is not None and hops < 8:
            nxt = uow.contacts.get_many([rec.merged_into]).get(rec.merged_into)
            if nxt is None:
                break
            rec, hops = nxt, hops + 1
        if rec.status == ACTIVE:
            resolved[cid] = rec

    chosen: uuid.UUID | None = None
    rule = "new"
    disagreeing: list[tuple[uuid.UUID, str]] = []
    others: list[tuple[uuid.UUID, str]] = []
    for key in keys:
        ids: list[uuid.UUID] = []
        for cid in by_key.get(key, ()):
            survivor = resolved.get(cid)
            if survivor is not None and survivor.id not in ids:
                ids.append(survivor.id)
        # a contact whose full name matches exactly comes first, then the oldest
        recs = sorted(
            (resolved_by_id(resolved, i) for i in ids),
            key=lambda r: (r.name_bidx != candidate.name_bidx or candidate.name_bidx is None, r.id),
        )
        for rec in recs:
            if chosen is not None:
                if rec.id != chosen:
                    others.append((rec.id, f"identity_conflict:{_kind_label(key[0])}"))
                continue
            stored = app.mapper.contact_from_record(rec)
            confident_stored = rec.name_confidence != "low"
            if names_clearly_disagree(
                candidate.first_name,
                stored.first_name,
                confident_a=candidate.name_confident,
                confident_b=confident_stored,
            ):
                disagreeing.append((rec.id, f"names_disagree:{_kind_label(key[0])}"))
                continue
            chosen = rec.id
            rule = _kind_label(key[0])
    review: dict[uuid.UUID, str] = {}
    for cid, reason in disagreeing + others:
        if cid != chosen and cid not in review:
            review[cid] = reason
    return MatchResult(
        contact_id=chosen,
        review=tuple(review.items()),
        rule=rule if chosen else ("names_disagree" if disagreeing else "new"),
    )


def resolved_by_id(resolved: dict[uuid.UUID, ContactRecord], contact_id: uuid.UUID) -> ContactRecord:
    """The resolved record whose id is ``contact_id``."""
    for rec in resolved.values():
        if rec.id == contact_id:
            return rec
    raise KeyError(contact_id)


def _kind_label(kind: str) -> str:
    return "external" if kind.startswith("external:") else kind
