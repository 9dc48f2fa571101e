"""JMESPath selectors of a mapped source: compiled once, checked at start-up.

A selector is a JMESPath expression (https://jmespath.org/specification.html) in the
``[sources.<name>]`` options that says where a value lives in the vendor's payload.  This
module compiles them, refuses unknown functions and wrong arities before any payload
arrives (JMESPath itself only notices when an expression runs), evaluates plain key paths
by direct look-ups (the hot path) and works out which expressions may read the answers
container (for the data-minimization count of unmapped answers).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser

__all__ = ["Selector", "SelectorProblem", "compile_selector", "jmespath_problem", "key_path"]


def jmespath_problem(exc: jmespath.exceptions.JMESPathError) -> str:
    """A one-line description of a JMESPath compile error: what and where (the column,
    from 1), for configuration messages (JMESPath's own text spans three lines)."""
    if isinstance(exc, jmespath.exceptions.IncompleteExpressionError):
        what = "incomplete expression"
    elif isinstance(exc, jmespath.exceptions.LexerError):
        what = "unexpected character"
    else:
        token = getattr(exc, "token_value", None)
        what = f"unexpected {token!r}" if token is not None else "invalid expression"
    position = getattr(exc, "lex_position", None)
    return what if position is None else f"{what} at column {position + 1}"


class SelectorProblem(ValueError):
    """An expression that cannot serve as a selector; ``reason`` says why (the option is
    named by the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class Selector:
    """One compiled JMESPath selector of the config.

    :ivar option: where it was configured (``fields.email``), used in error messages.
    :ivar text: the expression as written.
    :ivar touches_answers: False when the expression provably cannot read the answers
        container (so it is skipped when working out which answers were mapped).
    :ivar keys: for a plain path of keys (``payload.data."First Name"``), the keys: such
        a selector is evaluated by direct look-ups (the hot path), with JMESPath's
        semantics (a missing key or a non-object gives None).
    """

    option: str
    text: str
    parsed: jmespath.parser.ParsedResult = attrs.field(repr=False)
    touches_answers: bool = True
    keys: tuple[str, ...] | None = None

    def search(self, value: Any) -> Any:
        """Evaluate the selector on ``value`` (a record).

        :raises jmespath.exceptions.JMESPathError: when the expression cannot be applied
            to this record (for example ``join()`` over a missing answer).
        """
        if self.keys is not None:
            for key in self.keys:
                if not isinstance(value, dict):
                    return None
                value = value.get(key)
            return value
        return self.parsed.search(value)


def compile_selector(option: str, text: Any, answers_key: str | None = None) -> Selector:
    """Compile the expression ``text`` configured at ``option``.

    :param answers_key: the last key of the ``answers`` option's path (None when the
        answers container is the record itself), for :attr:`Selector.touches_answers`.
    :raises SelectorProblem: when ``text`` is not a non-empty string, is not JMESPath, or
        calls an unknown function or one with the wrong number of arguments.
    """
    if not isinstance(text, str) or not text.strip():
        raise SelectorProblem("must be a non-empty JMESPath expression (a string)")
    try:
        parsed = jmespath.compile(text)
    except jmespath.exceptions.JMESPathError as exc:
        raise SelectorProblem(f"invalid JMESPath: {jmespath_problem(exc)}") from None
    problem = _check_functions(parsed.parsed)
    if problem:
        raise SelectorProblem(problem)
    return Selector(option, text, parsed, _may_touch(parsed.parsed, answers_key), key_path(parsed.parsed))


def _ast_nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of a JMESPath AST, depth first."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(child for child in current.get("children", ()) if isinstance(child, Mapping))


def _check_functions(ast: Mapping[str, Any]) -> str | None:
    """Return why the functions called in ``ast`` are wrong, or None when they are fine.

    JMESPath only reports unknown functions and wrong arities when an expression runs;
    checking at start-up turns a typo in config into a :class:`ConfigError`.
    """
    table = jmespath.functions.Functions.FUNCTION_TABLE
    for node in _ast_nodes(ast):
        if node.get("type") != "function_expression":
            continue
        name = node["value"]
        if name not in table:
            known = ", ".join(sorted(table))
            return f"unknown JMESPath function {name}(); known: {known}"
        signature = table[name]["signature"]
        count = len(node.get("children", ()))
        variadic = bool(signature) and bool(signature[-1].get("variadic"))
        if (variadic and count < len(signature)) or (not variadic and count != len(signature)):
            return f"wrong number of arguments to {name}()"
    return None


def _may_touch(ast: Mapping[str, Any], answers_key: str | None) -> bool:
    """Whether an expression may read the answers container named ``answers_key``.

    Conservative: True when the expression names that key, projects over an object's
    values (``*``) or calls a function that reads whole objects.  ``answers_key`` None
    means the answers container is the record itself: every expression may read it.
    """
    if answers_key is None:
        return True
    for node in _ast_nodes(ast):
        kind = node.get("type")
        if kind == "field" and node.get("value") == answers_key:
            return True
        if kind == "value_projection":
            return True
        if kind == "function_expression" and node.get("value") in {"values", "keys", "merge", "to_array"}:
            return True
    return False


def key_path(ast: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The keys of an expression that is a plain path of keys (``a.b."c d"``), ``()`` for
    ``@``, None for anything else."""
    if ast["type"] in ("current", "identity"):
        return ()
    if ast["type"] == "field":
        return (ast["value"],)
    if ast["type"] == "subexpression":
        keys: tuple[str, ...] = ()
        for child in ast["children"]:
            part = key_path(child)
            if part is None:
                return None
            keys += part
        return keys
    return None
