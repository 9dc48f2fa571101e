"""Deprecated: the URL helpers moved to the connector kit, :mod:`carecrm.core.ingest.kit`
(``URL_PARAMETERS``, ``url_parameters``, ``without_query``).

This alias keeps ``from carecrm.plugins.sources.urls import ...`` working for one release;
importing it warns with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import warnings

from carecrm.core.ingest.kit import URL_PARAMETERS, url_parameters, without_query

__all__ = ["URL_PARAMETERS", "url_parameters", "without_query"]

warnings.warn(
    "carecrm.plugins.sources.urls is deprecated: import URL_PARAMETERS, url_parameters and without_query "
    "from carecrm.core.ingest.kit",
    DeprecationWarning,
    stacklevel=2,
)
