"""The connector contract kit: a folder of vendor payloads with their expected results drives
a source connector's tests.

Beside the payloads, one ``<name>.expected.json`` file per case says which payload to send
and what a correct ingestion of it yields.  :func:`load_cases` reads a folder of them,
:func:`check_case` runs one case through a connector (``verify`` when the case has a
secret, then ``parse``) and returns what is wrong (an empty list when nothing is), and
:func:`parametrize` turns a folder into a pytest parametrization, one test per case::

    from carecrm.core.testing.sources import check_case, parametrize

    @parametrize(Path(__file__).parent / "payloads")
    def test_contract(case):
        assert check_case(ChatbotConnector(name="chatbot", options={}, settings=Settings()), case) == []

The format of ``<name>.expected.json`` (every key but ``payload`` optional)::

    {
      "payload": "batch.json",              # the payload file, relative to the payload folder
      "content_type": "application/json",   # how it is sent (the default)
      "headers": {"X-Signature": "..."},     # request headers; "url": the request URL
      "received_at": "2024-05-01T10:00:00Z", # the receive time (default: now)
      "secret": "...",                       # call verify(payload, secret) before parse
      "refused": {"field": "body", "reason": "not JSON"},
                                             # verify or parse refuses the whole payload
                                             # (ValidationFailed naming "payload" and field;
                                             # "reason": a part of the reason)
      "records": [                           # the lead events, in order
        {"ref": "r1",                        # LeadEvent.record_ref
         "kinds": ["form.submitted"],        # its interactions' kinds, in order
         "channel": "web",                   # every interaction's channel
         "present": ["emails", "touchpoint.campaign"],   # non-empty attributes (dotted paths)
         "absent": ["full_name", "phones"],              # empty or None
         "equals": {"name_confidence": "low", "interactions.0.attributes.answered": true},
         "consents": [{"purpose": "marketing", "status": "revoked"}]}
      ],
      "rejected": [{"ref": "#3", "field": "timestamp", "reason": "Unix"}],
                                             # the Rejected records, in order
      "private": ["jane.placeholder@example.com"],
                                             # texts no refusal reason may contain
      "repeated_keys": false                 # true: records may share an idempotency key
    }

Paths in ``present``, ``absent`` and ``equals`` are attribute names and dict keys or list
indexes joined by dots (``interactions.0.attributes.duration_seconds``).  In ``equals``
a date-time is compared as its ISO 8601 text with ``Z`` (``"2017-12-15T00:59:29Z"``),
tuples as lists.  Besides what a case lists, every case checks the contract's own rules
(:mod:`carecrm.core.ingest.connectors`): ``parse`` yields only :class:`LeadEvent` and
:class:`Rejected` values, each lead event's ``source`` is the connector's name, every
interaction and consent signal has an idempotency key and no two records share one
(unless ``repeated_keys``), and a refusal's reason never holds a ``private`` text.

Importing this module does not import pytest (:func:`parametrize` does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import LeadEvent, RawPayload

if TYPE_CHECKING:
    import pytest

__all__ = ["EXPECTED_SUFFIX", "Case", "CaseError", "check_case", "check_folder", "load_cases", "parametrize"]

#: The file name ending of an expectation file.
EXPECTED_SUFFIX = ".expected.json"

_CASE_KEYS = frozenset(
    {"payload", "content_type", "headers", "url", "received_at", "secret", "refused", "records", "rejected"}
    | {"private", "repeated_keys", "note"}
)
_RECORD_KEYS = frozenset({"ref", "kinds", "channel", "present", "absent", "equals", "consents"})
_REJECTED_KEYS = frozenset({"ref", "field", "reason"})


class CaseError(ValueError):
    """An expectation file that does not follow the format (names the file and the key)."""


@attrs.frozen
class Case:
    """One payload and what a correct ingestion of it yields.

    :ivar name: the expectation file's name without :data:`EXPECTED_SUFFIX` (the test id).
    :ivar path: the expectation file.
    :ivar payload_path: the payload file it names.
    :ivar expected: the parsed expectation (the format in this module's docstring).
    """

    name: str
    path: Path
    payload_path: Path
    expected: Mapping[str, Any] = attrs.field(repr=False)

    def payload(self) -> RawPayload:
        """The payload as the vendor sends it: the file's bytes with the case's content type,
        headers, URL and receive time."""
        e = self.expected
        extra: dict[str, Any] = {}
        if "received_at" in e:
            extra["received_at"] = _parse_time(e["received_at"], self.path)
        return RawPayload(
            body=self.payload_path.read_bytes(),
            content_type=e.get("content_type", "application/json"),
            headers=dict(e.get("headers", {})),
            url=e.get("url"),
            origin=self.payload_path.name,
            **extra,
        )


def load_cases(folder: Path | str, *, payloads: Path | str | None = None) -> list[Case]:
    """Every case of ``folder`` (its ``*.expected.json`` files, sorted by name).

    :param payloads: where the payload files named by the cases are (default: ``folder``),
        for a folder of expectations about payloads kept elsewhere (a shared corpus).
    :raises CaseError: for an expectation file that is not JSON, names no payload or has an
        unknown key (a misspelt key would silently check nothing).
    :raises FileNotFoundError: when ``folder`` does not exist.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder of connector cases at {root}")
    base = Path(payloads) if payloads is not None else root
    cases = []
    for path in sorted(root.glob("*" + EXPECTED_SUFFIX)):
        try:
            expected = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CaseError(f"{path}: not JSON ({exc})") from None
        _check_format(path, expected)
        cases.append(Case(path.name[: -len(EXPECTED_SUFFIX)], path, base / expected["payload"], expected))
    return cases


def parametrize(folder: Path | str, *, payloads: Path | str | None = None) -> pytest.MarkDecorator:
    """A ``pytest.mark.parametrize("case", ...)`` over the cases of ``folder``, one test per
    case named after it.  A case whose payload file is missing is skipped, with the path
    in the reason (a corpus that is not there is said, not silently passed)."""
    import pytest

    params = []
    for case in load_cases(folder, payloads=payloads):
        marks = []
        if not case.payload_path.is_file():
            marks.append(pytest.mark.skip(reason=f"payload file not available: {case.payload_path}"))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return pytest.mark.parametrize("case", params)


def check_case(connector: SourceConnector, case: Case) -> list[str]:
    """Run ``case`` through ``connector`` and say what differs from its expectation.

    :returns: one line per failed check (``"records[1].kinds: expected [...], got [...]"``),
        empty when the connector does what the case expects.  An exception other than
        :class:`ValidationFailed` from ``verify`` or ``parse`` is a failure too (its type
        only: the text may quote the payload).
    """
    e = case.expected
    payload = case.payload()
    failures: list[str] = []
    try:
        if "secret" in e:
            connector.verify(payload, e["secret"])
        items = list(connector.parse(payload))
    except ValidationFailed as exc:
        refused = e.get("refused")
        if refused is None:
            return [f"the payload was refused: field {exc.field!r}: {exc.reason}"]
        failures += _check_refusal(exc, refused)
        failures += _check_private(e, [exc.reason])
        return failures
    except Exception as exc:  # noqa: BLE001 - reported as a failure of the case
        return [f"verify/parse raised {type(exc).__name__} (only ValidationFailed may refuse a payload)"]
    if "refused" in e:
        return [f"expected the payload to be refused (field {e['refused'].get('field')!r}); it was accepted"]

    events = [item for item in items if isinstance(item, LeadEvent)]
    rejected = [item for item in items if isinstance(item, Rejected)]
    others = [type(item).__name__ for item in items if not isinstance(item, LeadEvent | Rejected)]
    if others:
        failures.append(f"parse yielded {', '.join(others)}; only LeadEvent and Rejected values are allowed")
    failures += _check_contract(connector, events, bool(e.get("repeated_keys", False)))
    failures += _check_records(events, e.get("records", []))
    failures += _check_rejected(rejected, e.get("rejected", []))
    failures += _check_private(e, [r.reason for r in rejected])
    return failures


# --------------------------------------------------------------------------- checks


def _check_refusal(exc: ValidationFailed, refused: Mapping[str, Any]) -> list[str]:
    return _compare_refusal("refused", exc.record, exc.field, exc.reason, {"ref": "payload", **refused})


def _compare_refusal(where: str, ref: str, field: str, reason: str, want: Mapping[str, Any]) -> list[str]:
    """The differences of one refusal from its expectation (``ref`` and ``field`` equal,
    ``reason`` containing the expected text)."""
    out = []
    for key, got in (("ref", ref), ("field", field)):
        if key in want and got != want[key]:
            out.append(f"{where}.{key}: expected {want[key]!r}, got {got!r}")
    if "reason" in want and want["reason"] not in reason:
        out.append(f"{where}.reason: expected it to contain {want['reason']!r}, got {reason!r}")
    return out


def _check_contract(connector: SourceConnector, events: Sequence[LeadEvent], repeated: bool) -> list[str]:
    out = []
    seen: dict[str, int] = {}
    for i, event in enumerate(events):
        if event.source != connector.name:
            out.append(f"records[{i}].source: expected the connector's name {connector.name!r}, got {event.source!r}")
        keys = [d.idempotency_key for d in event.interactions] + [c.idempotency_key for c in event.consents]
        if any(not k for k in keys):
            out.append(f"records[{i}]: an interaction or consent signal has no idempotency key")
        for key in keys:
            if key and key in seen and seen[key] != i and not repeated:
                out.append(f"records[{i}] and records[{seen[key]}] share an idempotency key")
            seen.setdefault(key, i)
    return out


def _check_records(events: Sequence[LeadEvent], expected: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    if len(events) != len(expected):
        out.append(f"records: expected {len(expected)} lead events, got {len(events)}")
    for i, (event, want) in enumerate(zip(events, expected, strict=False)):
        where = f"records[{i}]"
        if "ref" in want and event.record_ref != want["ref"]:
            out.append(f"{where}.ref: expected {want['ref']!r}, got {event.record_ref!r}")
        kinds = [d.kind for d in event.interactions]
        if "kinds" in want and kinds != list(want["kinds"]):
            out.append(f"{where}.kinds: expected {list(want['kinds'])}, got {kinds}")
        if "channel" in want:
            channels = sorted({str(d.channel) for d in event.interactions})
            if channels != [want["channel"]]:
                out.append(f"{where}.channel: expected {want['channel']!r}, got {channels}")
        for path in want.get("present", ()):
            found, value = _lookup(event, path)
            if not found or _empty(value):
                out.append(f"{where}.{path}: expected a value, got none")
        for path in want.get("absent", ()):
            found, value = _lookup(event, path)
            if found and not _empty(value):
                out.append(f"{where}.{path}: expected none, got a value")
        for path, value in want.get("equals", {}).items():
            found, got = _lookup(event, path)
            if not found:
                out.append(f"{where}.{path}: no such attribute")
            elif _plain(got) != value:
                out.append(f"{where}.{path}: expected {value!r}, got {_plain(got)!r}")
        if "consents" in want:
            got_consents = [{k: c[k] for k in ("purpose", "status")} for c in _plain(event.consents)]
            wanted = [{k: c[k] for k in ("purpose", "status") if k in c} for c in want["consents"]]
            trimmed = [{k: g[k] for k in w} for g, w in zip(got_consents, wanted, strict=False)]
            if len(got_consents) != len(wanted) or trimmed != wanted:
                out.append(f"{where}.consents: expected {wanted}, got {got_consents}")
    return out


def _check_rejected(rejected: Sequence[Rejected], expected: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    got = [(r.ref, r.field) for r in rejected]
    if len(rejected) != len(expected):
        out.append(f"rejected: expected {len(expected)} refused records, got {len(rejected)}: {got}")
    for i, (r, want) in enumerate(zip(rejected, expected, strict=False)):
        out += _compare_refusal(f"rejected[{i}]", r.ref, r.field, r.reason, want)
    return out


def _check_private(expected: Mapping[str, Any], reasons: Iterable[str]) -> list[str]:
    out = []
    for reason in reasons:
        for text in expected.get("private", ()):
            if text and text in reason:
                out.append("a refusal's reason repeats a private value of the payload")
    return out


# --------------------------------------------------------------------------- helpers


def _check_format(path: Path, expected: Any) -> None:
    if not isinstance(expected, dict):
        raise CaseError(f"{path}: must hold a JSON object")
    if not isinstance(expected.get("payload"), str):
        raise CaseError(f"{path}: key 'payload' (the payload file's name) is required")
    _known(path, "", expected, _CASE_KEYS)
    for i, record in enumerate(expected.get("records", [])):
        _known(path, f"records[{i}].", record, _RECORD_KEYS)
    for i, record in enumerate(expected.get("rejected", [])):
        _known(path, f"rejected[{i}].", record, _REJECTED_KEYS)


def _known(path: Path, where: str, table: Any, known: frozenset[str]) -> None:
    if not isinstance(table, dict):
        raise CaseError(f"{path}: {where or 'the case'} must be a JSON object")
    unknown = sorted(set(table) - known)
    if unknown:
        raise CaseError(f"{path}: unknown key {where}{unknown[0]!r}; known: {', '.join(sorted(known))}")


def _parse_time(text: Any, path: Path) -> datetime:
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise CaseError(f"{path}: received_at is not an ISO 8601 date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _lookup(value: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted path of attribute names, dict keys and list indexes."""
    for part in path.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                return False, None
            value = value[part]
        elif isinstance(value, list | tuple):
            if not part.isdigit() or int(part) >= len(value):
                return False, None
            value = value[int(part)]
        elif attrs.has(type(value)) and part in attrs.fields_dict(type(value)):
            value = getattr(value, part)
        else:
            return False, None
    return True, value


def _empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, list | tuple | dict) and not value)


def _plain(value: Any) -> Any:
    """A value as JSON would hold it: date-times as ISO text with ``Z``, tuples as lists,
    attrs instances as dicts."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def check_folder(
    folder: Path | str, make_connector: Callable[[], SourceConnector], *, payloads: Path | str | None = None
) -> dict[str, list[str]]:
    """Run every case of ``folder`` whose payload file exists through a connector built by
    ``make_connector`` (a fresh one per case).

    :returns: case name → its failures (empty lists for the cases that pass).
    """
    return {
        case.name: check_case(make_connector(), case)
        for case in load_cases(folder, payloads=payloads)
        if case.payload_path.is_file()
    }
