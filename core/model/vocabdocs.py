"""Fill the generated parts of ``docs/vocabulary.md`` from the code's registries.

The page is prose written by hand around blocks that this module writes::

    <!-- generated: kinds -->
    ...table made from carecrm.core.model.vocab.KIND_MEANINGS...
    <!-- end generated -->

``python -m carecrm.core.model.vocabdocs docs/vocabulary.md`` rewrites every block in place;
``--check`` only reports whether the file is current (exit status 1 when it is not).
``tests/docs/test_vocabulary_docs.py`` checks that the committed page equals :func:`render` of
itself, so the vocabulary on the page cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from carecrm.core.model import vocab
from carecrm.core.model.channels import DEFAULT_RULES
from carecrm.core.pipeline.stages import STAGE_MEANINGS, PipelineConfig, implied_stage

_BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def _code(value: str) -> str:
    return f"`{value}`"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; cells are written as given (``|`` escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _meanings(name: str, table: Mapping[str, str]) -> str:
    return _table([name, "meaning"], [[_code(key), text] for key, text in table.items()])


def kinds() -> str:
    """The built-in interaction kinds grouped by noun, with their meaning, fixed direction
    and the channel their noun implies."""
    nouns: dict[str, list[str]] = {}
    for kind in vocab.KIND_MEANINGS:
        nouns.setdefault(kind.split(".", 1)[0], []).append(kind)
    rows = []
    for noun, members in nouns.items():
        for kind in members:
            rows.append(
                [
                    _code(kind),
                    vocab.KIND_MEANINGS[kind],
                    vocab.DIRECTION_OF_KIND.get(kind, "given" if noun == "call" else ""),
                    _code(vocab.CHANNEL_OF_NOUN[noun]) if noun in vocab.CHANNEL_OF_NOUN else "",
                ]
            )
    return _table(["kind", "meaning", "direction", "implied channel"], rows)


def channels() -> str:
    """The channels with their meaning."""
    return _meanings("channel", vocab.CHANNEL_MEANINGS)


def channel_groups() -> str:
    """The marketing channel groups, in order, with their meaning."""
    return _meanings("channel group", vocab.CHANNEL_GROUP_MEANINGS)


def _condition(name: str, want: Any) -> str:
    if name == "has":
        return f"has `{want}`"
    options = want if isinstance(want, list) else [want]
    return f"{name} in " + ", ".join(_code(str(o)) for o in options)


def channel_group_rules() -> str:
    """The default rules that derive a channel group from a touchpoint, in the order they
    are tried."""
    rows = []
    for n, rule in enumerate(DEFAULT_RULES, 1):
        conditions = [_condition(k, v) for k, v in rule.items() if k != "group"]
        rows.append([str(n), "; ".join(conditions), _code(str(rule["group"]))])
    return _table(["#", "when the touchpoint's ...", "group"], rows)


def stages() -> str:
    """The default pipeline's stages (main line in order, then side stages)."""
    pipeline = PipelineConfig.default()
    rows = [[_code(s), "main", STAGE_MEANINGS[s]] for s in pipeline.stages]
    rows += [[_code(s), "side", STAGE_MEANINGS[s]] for s in pipeline.side_stages]
    return _table(["stage", "line", "meaning"], rows)


def moves() -> str:
    """The default pipeline's allowed moves, from each stage."""
    pipeline = PipelineConfig.default()
    rows = [[_code(s), ", ".join(_code(t) for t in pipeline.allowed_next(s))] for s in pipeline.all_stages]
    return _table(["from", "may move to"], rows)


#: Appointment types tried when listing implied moves (any other type implies nothing).
_APPOINTMENT_TYPES = ("consult", "treatment", "follow_up", "")


def implied_moves() -> str:
    """The stage each interaction implies, found by asking :func:`implied_stage` about
    every built-in kind and appointment type, with and without a completed treatment."""
    rows = []
    for kind in sorted(vocab.INTERACTION_KINDS):
        for appt in _APPOINTMENT_TYPES:
            before = implied_stage(kind, {"appointment_type": appt}, had_completed_treatment=False)
            after = implied_stage(kind, {"appointment_type": appt}, had_completed_treatment=True)
            if before is None and after is None:
                continue
            if appt and implied_stage(kind, {}, had_completed_treatment=False) == before:
                continue  # the type does not matter: listed once, as "any"
            shown_type = _code(appt) if appt else "any"
            if before == after:
                rows.append([_code(kind), shown_type, _code(before or ""), "(same)"])
            else:
                rows.append([_code(kind), shown_type, _code(before or ""), _code(after or "")])
    return _table(["interaction", "appointment_type", "implies", "after a completed treatment"], rows)


def conversion_steps() -> str:
    """The conversion ladder's steps, in order."""
    return _meanings("step", vocab.CONVERSION_STEP_MEANINGS)


def consent_purposes() -> str:
    """The built-in consent purposes."""
    return _meanings("purpose", vocab.CONSENT_PURPOSES)


def consent_statuses() -> str:
    """The statuses of a consent-ledger event."""
    return _meanings("status", vocab.CONSENT_STATUSES)


#: The blocks a page may hold, by name.
BLOCKS: dict[str, Callable[[], str]] = {
    "kinds": kinds,
    "channels": channels,
    "channel_groups": channel_groups,
    "channel_group_rules": channel_group_rules,
    "stages": stages,
    "moves": moves,
    "implied_moves": implied_moves,
    "conversion_steps": conversion_steps,
    "consent_purposes": consent_purposes,
    "consent_statuses": consent_statuses,
}


def block_names(text: str) -> list[str]:
    """The names of the generated blocks in ``text``, in order."""
    return [m["name"] for m in _BLOCK.finditer(text)]


def render(text: str) -> str:
    """``text`` with every generated block's body replaced by the code's current table.

    :param text: the page (Markdown with ``<!-- generated: NAME -->`` blocks).
    :returns: the page, otherwise unchanged.
    :raises KeyError: for a block whose name is not in :data:`BLOCKS`.
    """

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name]() + match.group(4)

    return _BLOCK.sub(fill, text)


def main(argv: Sequence[str]) -> int:
    """Command line: ``PATH`` rewrites the page; ``--check PATH`` reports staleness.

    :returns: 0 when written or current, 1 when ``--check`` finds it stale, 2 on misuse.
    """
    args = list(argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    if len(paths) != 1:
        sys.stderr.write("usage: python -m carecrm.core.model.vocabdocs [--check] docs/vocabulary.md\n")
        return 2
    path = Path(paths[0])
    text = path.read_text(encoding="utf-8")
    fresh = render(text)
    if check:
        if fresh != text:
            sys.stderr.write(f"{path} is stale: run python -m carecrm.core.model.vocabdocs {path}\n")
            return 1
        return 0
    path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
