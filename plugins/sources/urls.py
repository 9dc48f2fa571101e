"""URL helpers shared by the source connectors: touchpoint fields from a landing page's query
string, and URLs stored without their query (which may carry tokens or personal data, such as
``?email=``).

The parameters are Google Analytics' UTM parameters
(https://support.google.com/analytics/answer/10917952) and the ad platforms' click ids:
``gclid`` (Google Ads auto-tagging), ``fbclid`` (Meta), ``msclkid`` (Microsoft Advertising).
"""

from __future__ import annotations

import urllib.parse

#: URL query parameter → :class:`carecrm.core.models.Touchpoint` field.
URL_PARAMETERS: dict[str, str] = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "campaign",
    "utm_term": "term",
    "utm_content": "content",
    "gclid": "gclid",
    "fbclid": "fbclid",
    "msclkid": "msclkid",
}


def without_query(url: str) -> str:
    """The URL without its query string and fragment (they may carry tokens or personal data)."""
    if "?" not in url and "#" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def url_parameters(url: str) -> dict[str, str]:
    """Touchpoint fields from a URL's UTM parameters and click ids (empty values skipped; the
    first of a repeated parameter wins; names compared case-insensitively)."""
    try:
        query = urllib.parse.urlsplit(url).query
    except ValueError:
        return {}
    out: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
        field = URL_PARAMETERS.get(name.lower())
        if field is not None and value.strip() and field not in out:
            out[field] = value.strip()
    return out
