"""Data minimization of a mapped source: which answers of a record no selector used.

Only mapped fields are kept; the names (never the values) of the other answers are listed
in :attr:`~carecrm.core.model.domain.LeadEvent.dropped_fields` (``docs/vocabulary.md``, "Data collected
by default"), and with ``keep_other_answers`` the answers themselves go into the encrypted
inquiry text.
"""

from __future__ import annotations

from typing import Any

import attrs
import jmespath.exceptions

from carecrm.plugins.sources.mapped.selectors import Selector

__all__ = ["Answers"]


@attrs.frozen
class Answers:
    """Where a record's answers are and what to do with the unmapped ones.

    :ivar answers_path: the key path of the answers container (``()``: the record itself),
        from the ``answers`` option.
    :ivar answer_key: the selector naming a list answer (``answer_key``), or None.
    :ivar keep_other: the ``keep_other_answers`` option.
    """

    answers_path: tuple[str, ...]
    answer_key: Selector | None
    keep_other: bool

    def unmapped(
        self, record: dict[str, Any], results: list[tuple[Selector, Any]]
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        """Names of the answers no mapped selector used, and those answers by name.

        An answer counts as used when removing it from the answers container changes the
        result of a mapped selector.  Candidates are first narrowed to the answers that
        contain the selector's result (cheap), then checked by leaving each one out; only
        a derived result (``join()``, ``length()``) is checked against every answer.
        """
        parent: dict[str, Any] | None = None
        container: Any = record
        for key in self.answers_path:
            if not isinstance(container, dict):
                return (), {}
            parent, container = container, container.get(key)
        if isinstance(container, dict):
            names = list(container)
            answers = list(container.values())
        elif isinstance(container, list):
            answers = container
            names = [self.answer_name(i, a) for i, a in enumerate(container)]
        else:
            return (), {}
        if not answers:
            return (), {}

        def without(i: int) -> Any:
            if isinstance(container, dict):
                return {k: v for k, v in container.items() if k != names[i]}
            return container[:i] + container[i + 1 :]

        def changed(selector: Selector, result: Any, i: int) -> bool:
            replacement = without(i)
            target = replacement
            if parent is not None:
                parent[self.answers_path[-1]] = replacement
                target = record
            try:
                return bool(selector.search(target) != result)
            except jmespath.exceptions.JMESPathError:
                return True
            finally:
                if parent is not None:
                    parent[self.answers_path[-1]] = container

        used: set[int] = set()
        pending: list[tuple[Selector, Any]] = []
        if isinstance(container, dict):
            # fast path: a plain key path into the answers object names its answer directly
            depth = len(self.answers_path)
            position = {name: i for i, name in enumerate(names)}
            for selector, result in results:
                if result is None:
                    continue
                keys = selector.keys
                if keys is not None and len(keys) == depth + 1 and keys[:depth] == tuple(self.answers_path):
                    if keys[depth] in position:
                        used.add(position[keys[depth]])
                    continue
                pending.append((selector, result))
        else:
            pending = list(results)
        if not pending:
            return self.leftovers(names, answers, used)

        leaves: list[tuple[set[tuple[type, Any]], set[int]]] = []
        for answer in answers:
            scalars: set[tuple[type, Any]] = set()
            ids: set[int] = set()
            _scalar_leaves(answer, scalars, ids)
            leaves.append((scalars, ids))

        for selector, result in pending:
            if result is None:
                continue
            r_scalars: set[tuple[type, Any]] = set()
            r_ids: set[int] = set()
            _scalar_leaves(result, r_scalars, r_ids)
            candidates = [
                i for i, (scalars, ids) in enumerate(leaves) if i not in used and (r_ids & ids or r_scalars & scalars)
            ]
            hits = [i for i in candidates if changed(selector, result, i)]
            if not hits:
                hits = [
                    i
                    for i in range(len(answers))
                    if i not in used and i not in candidates and changed(selector, result, i)
                ]
            used.update(hits)

        return self.leftovers(names, answers, used)

    def leftovers(self, names: list[Any], answers: list[Any], used: set[int]) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The names of the answers not in ``used`` (each once) and, with
        ``keep_other_answers``, those answers by name."""
        dropped: list[str] = []
        others: dict[str, Any] = {}
        for i, name in enumerate(names):
            if i in used:
                continue
            if name not in dropped:
                dropped.append(name)
            if self.keep_other:
                others[name] = answers[i]
        return tuple(dropped), others

    def answer_name(self, index: int, answer: Any) -> str:
        """The name of a list answer: ``answer_key`` on it, else ``#<index>``."""
        if self.answer_key is not None:
            try:
                name = self.answer_key.search(answer)
            except jmespath.exceptions.JMESPathError:
                name = None
            if isinstance(name, str) and name:
                return name
            if isinstance(name, int) and not isinstance(name, bool):
                return str(name)
        return f"#{index}"


def _scalar_leaves(value: Any, values: set[tuple[type, Any]], ids: set[int]) -> None:
    """Collect the scalar leaves (with their type) and container ids under ``value``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ids.add(id(item))
            stack.extend(item.values())
        elif isinstance(item, list):
            ids.add(id(item))
            stack.extend(item)
        elif item is not None:
            values.add((type(item), item))
