"""Typed delegation from the :class:`~carecrm.core.CareCRM` facade to its services.

The facade is a composition root: it builds each use-case service once (with the
collaborators that service needs) and forwards its public methods to them.  Writing
each forward by hand would copy every signature and docstring twice;
:func:`delegate` makes the forward from the service's method itself, so the facade's
method has the service's signature (mypy checks callers against it) and its docstring
(``help(CareCRM.rescore_all)`` shows the service's).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def delegate(service: str, method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[Any, P], R]:
    """A facade method that calls ``method`` on the facade's attribute ``service``.

    Use in a class body: ``rescore_all = delegate("scores", ScoringService.rescore_all)``
    makes ``app.rescore_all(...)`` call ``app.scores.rescore_all(...)``.

    :param service: the name of the facade's attribute that holds the service.
    :param method: the service's (unbound) method; its name, signature and docstring are
        the facade method's.
    :returns: a function to bind as the facade's method.
    """
    name = method.__name__

    @functools.wraps(method)
    def forward(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return cast(R, getattr(getattr(self, service), name)(*args, **kwargs))

    return forward
