"""Typed plugin options: each component declares an attrs class, structured by cattrs.

A component (source connector, scoring model, attribution model, segment builder) sets
``options_type`` to a frozen attrs class; a plain plugin declares the class of its
``[plugins.<name>]`` table through ``carecrm_register_options``.  The core structures
the table into it with :func:`structure_options`: an unknown key or a value of the wrong
type is a :class:`~carecrm.core.errors.ConfigError` naming the table, the key, the
plugin and the known keys.  Structuring is strict: a string is never turned into a
number or a list, a number never into a string, and only ``true``/``false`` are booleans.

Example::

    @attrs.frozen(kw_only=True)
    class ChatbotOptions:
        max_age_seconds: float | None = None
        ignore: tuple[str, ...] = ()

    class ChatbotConnector(SourceConnector):
        connector_id = "chatbot"
        options_type = ChatbotOptions
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.cols import is_mapping, is_sequence
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from carecrm.core.errors import ConfigError

T = TypeVar("T")


@attrs.frozen
class NoOptions:
    """The options of a component that takes none: any key is an unknown option."""


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a string, not {_type_name(value)}")
    return value


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, not {_type_name(value)}")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be a whole number, not {_type_name(value)}")
    return value


def _strict_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"must be a number, not {_type_name(value)}")
    return float(value)


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float"}
    return names.get(type(value), type(value).__name__)


@functools.cache
def options_converter() -> cattrs.Converter:
    """The strict cattrs converter options are structured with (built once).

    :returns: a converter that forbids extra keys, validates in detail (every problem is
        reported with its path) and refuses lossy coercions (see the module docstring).
    """
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)

    def sequence_factory(type_: Any) -> Callable[[Any, Any], Any]:
        default = _default_sequence_hook(converter, type_)

        def hook(value: Any, type_arg: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise TypeError(f"must be an array, not {_type_name(value)}")
            return default(value, type_arg)

        return hook

    converter.register_structure_hook_factory(is_sequence, sequence_factory)

    def mapping_factory(type_: Any) -> Callable[[Any, Any], Any]:
        from cattrs.cols import mapping_structure_factory

        default = mapping_structure_factory(type_, converter)

        def hook(value: Any, type_arg: Any) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"must be a table, not {_type_name(value)}")
            return default(value, type_arg)

        return hook

    converter.register_structure_hook_factory(is_mapping, mapping_factory)
    return converter


def _default_sequence_hook(converter: cattrs.Converter, type_: Any) -> Callable[[Any, Any], Any]:
    from cattrs.cols import list_structure_factory

    origin = getattr(type_, "__origin__", None)
    structure_list = list_structure_factory(type_, converter)
    if origin is tuple:
        return lambda value, t: tuple(structure_list(value, t))
    if origin in (frozenset, set):
        return lambda value, t: (frozenset if origin is frozenset else set)(structure_list(value, t))
    return structure_list


def known_keys(options_type: type[Any]) -> tuple[str, ...]:
    """The keys an options class accepts, in declaration order (``()`` for none)."""
    return tuple(field.name for field in attrs.fields(options_type))


def _first_problem(exc: BaseException, path: tuple[str, ...]) -> tuple[tuple[str, ...], str, bool] | None:
    """``(key path, reason, unknown?)`` of the first problem under ``exc``; unknown keys first."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return (*path, sorted(exc.extra_fields)[0]), "unknown", True
    if isinstance(exc, BaseExceptionGroup):
        found: list[tuple[tuple[str, ...], str, bool]] = []
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    sub_path = (*path, note.name)
                elif isinstance(note, IterableValidationNote):
                    sub_path = (*path[:-1], f"{path[-1] if path else ''}[{note.index}]")
            problem = _first_problem(sub, sub_path)
            if problem is not None:
                found.append(problem)
        found.sort(key=lambda p: not p[2])
        return found[0] if found else None
    if isinstance(exc, KeyError):
        return path, "is required", False
    return path, str(exc) or type(exc).__name__, False


def structure_options(options_type: type[T], table: Any, *, section: str, owner: str) -> T:
    """Structure one options table into ``options_type``.

    :param options_type: a frozen attrs class (:class:`NoOptions` for none).
    :param table: the TOML table (a mapping), or an ``options_type`` instance (returned
        as it is).
    :param section: the table's dotted name for messages (``sources.typeform``,
        ``scoring``, ``attribution.models.linear``, ``plugins.myplugin``).
    :param owner: who reads the table, for messages (``source 'typeform' (connector
        'mapped' of plugin carecrm.plugins.sources.mapped)``).
    :returns: the structured instance.
    :raises ConfigError: ``<section>.<key>: unknown option '<key>' of <owner>; known: ...``
        for an unknown key, ``<section>.<key>: option '<key>' of <owner> must be ...`` for
        a wrong type or a missing required key, or ``[<section>] must be a table``.
    """
    if isinstance(table, options_type):
        return table
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table (options of {owner})")
    try:
        return options_converter().structure(dict(table), options_type)
    except (ClassValidationError, ForbiddenExtraKeysError, TypeError, ValueError) as exc:
        problem = _first_problem(exc, ())
        if problem is None:  # pragma: no cover - cattrs always says what failed
            raise ConfigError(f"[{section}]: invalid options of {owner}: {exc}") from None
        keys, reason, unknown = problem
        key = ".".join(keys) or "?"
        if unknown:
            known = ", ".join(known_keys(options_type)) or "(none: it takes no options)"
            if len(keys) > 1:
                known = "see its documentation"
            if section.startswith("sources.") and len(keys) == 1:
                known += "; and for every source: connector, secret"
            raise ConfigError(f"{section}.{key}: unknown option {key!r} of {owner}; known: {known}") from None
        raise ConfigError(f"{section}.{key}: option {key!r} of {owner} {reason}") from None


def legacy_options(options_type: type[Any] | None, table: Any, *, section: str, owner: str) -> Any:
    """Options for a component that declares no ``options_type`` (deprecated): the table
    as a plain ``dict``, with a :class:`DeprecationWarning` when it is not empty; with a
    declared type, :func:`structure_options`.

    :raises ConfigError: as :func:`structure_options`, or when ``table`` is not a table.
    """
    if options_type is not None:
        return structure_options(options_type, table, section=section, owner=owner)
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table (options of {owner})")
    if table:
        warnings.warn(
            f"{owner} declares no options_type; its [{section}] options are passed as a plain dict. "
            "Declare an attrs options class (carecrm.core.plugins.options): untyped options go in the next release.",
            DeprecationWarning,
            stacklevel=3,
        )
    return dict(table)


def component_options(options_type: type[Any] | None, options: Any, *, section: str, owner: str) -> Any:
    """What a component's ``__init__`` keeps as ``self.options``: an ``options_type``
    instance (a mapping is structured, an instance kept), or, for a component that
    declares no type (deprecated), a plain ``dict`` copy.

    :raises ConfigError: as :func:`structure_options`.
    """
    if options_type is None:
        if not isinstance(options, Mapping):
            raise ConfigError(f"[{section}] must be a table (options of {owner})")
        return dict(options)
    return structure_options(options_type, options, section=section, owner=owner)


def takes_keywords(cls: type[Any]) -> bool:
    """Whether ``cls`` is built with the keyword convention ``cls(name=..., options=...,
    settings=...)``: its constructor names a ``settings`` parameter or takes ``**kwargs``.
    A class whose ``__init__`` keeps an old positional signature answers False (the core
    then builds it the old way, with a :class:`DeprecationWarning`)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return True
    return "settings" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build_component(
    cls: type[T],
    *,
    name: str,
    table: Any,
    settings: Any,
    section: str,
    owner: str,
    legacy: Callable[[dict[str, Any]], T],
) -> T:
    """Build one component the one way: ``cls(name=name, options=..., settings=settings)``
    with the table structured into ``cls.options_type`` (errors name ``owner``).

    :param cls: the registered class.
    :param name: the component's name (a source's name, a model or builder id).
    :param table: its options table (a mapping; None for none).
    :param settings: the practice's :class:`~carecrm.core.config.Settings`.
    :param section: the table's dotted name for messages.
    :param owner: who reads it, for messages (names the plugin).
    :param legacy: how to build a class that still has an old positional ``__init__``
        (given the table as a dict); used with a :class:`DeprecationWarning`.
    :returns: the instance.
    :raises ConfigError: for unknown keys or wrong types (:func:`structure_options`), or
        whatever the class raises for a wrong option.
    """
    table = {} if table is None else table
    if not takes_keywords(cls):
        warnings.warn(
            f"{owner}: {cls.__qualname__}.__init__ takes the old positional arguments; "
            "take name=..., options=..., settings=... (keyword-only) instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return legacy(legacy_options(None, table, section=section, owner=owner))
    options_type = getattr(cls, "options_type", None)
    if options_type is None:
        options: Any = legacy_options(None, table, section=section, owner=owner)
    else:
        options = structure_options(options_type, table, section=section, owner=owner)
    return cls(name=name, options=options, settings=settings)  # type: ignore[call-arg]
