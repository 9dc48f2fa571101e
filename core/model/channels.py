"""Marketing channel groups derived from a touchpoint, like analytics tools' default
channel groups (Google Analytics 4 "Default channel group" rules, simplified).

The rules are data: a practice may replace them in ``[channel_groups]`` with an ordered
list of rules, each a table of conditions (``medium``, ``source``, ``has`` a field) and
the ``group`` it yields::

    [[channel_groups.rules]]
    medium = ["cpc", "ppc", "paid"]
    source = ["facebook", "instagram", "meta"]
    group = "paid_social"

A rule matches when every condition it names matches (values compared case-folded);
the first matching rule wins; nothing matching gives ``other``, and a touchpoint with
no source, medium or click id gives ``direct``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carecrm.core.model.domain import Touchpoint

_SOCIAL = [
    "facebook",
    "fb",
    "instagram",
    "ig",
    "meta",
    "tiktok",
    "linkedin",
    "twitter",
    "x",
    "pinterest",
    "snapchat",
    "youtube",
]
_SEARCH = ["google", "bing", "yahoo", "duckduckgo", "baidu", "ecosia"]
_PAID = ["cpc", "ppc", "paid", "paidsearch", "paid_search", "sem"]
_PAID_SOCIAL = ["paid_social", "paidsocial", "social_paid", "cpm", "paid"]

#: The default rules, in order.
DEFAULT_RULES: list[dict[str, Any]] = [
    {"has": "gclid", "group": "paid_search"},
    {"has": "msclkid", "group": "paid_search"},
    {"has": "fbclid", "medium": _PAID + _PAID_SOCIAL, "group": "paid_social"},
    {"source": _SOCIAL, "medium": _PAID + _PAID_SOCIAL, "group": "paid_social"},
    {"source": _SEARCH, "medium": _PAID, "group": "paid_search"},
    {"medium": ["display", "banner", "cpm", "programmatic"], "group": "display"},
    {"medium": ["email", "e-mail", "newsletter"], "group": "email"},
    {"source": ["email", "newsletter", "sendgrid", "mailchimp"], "group": "email"},
    {"medium": ["patient_referral", "referral_patient", "word_of_mouth"], "group": "referral_patient"},
    {
        "medium": ["physician_referral", "referral_physician", "provider_referral"],
        "group": "referral_physician",
    },
    {
        "source": [
            "gbp",
            "google_business_profile",
            "google_my_business",
            "yelp",
            "healthgrades",
            "zocdoc",
            "vitals",
        ],
        "group": "local_listing",
    },
    {"medium": ["local", "listing", "organic_local"], "group": "local_listing"},
    {"source": _SEARCH, "medium": ["organic", "seo"], "group": "organic_search"},
    {"source": _SOCIAL, "group": "organic_social"},
    {"has": "fbclid", "group": "organic_social"},
    {"medium": ["social", "social-network", "social-media", "sm"], "group": "organic_social"},
    {"source": _SEARCH, "group": "organic_search"},
    {"medium": ["referral"], "group": "other"},
]


def _matches(rule: Mapping[str, Any], tp: Touchpoint) -> bool:
    for cond, want in rule.items():
        if cond == "group":
            continue
        if cond == "has":
            if getattr(tp, str(want), None) in (None, ""):
                return False
            continue
        value = getattr(tp, cond, None)
        if value is None:
            return False
        options = [str(w).casefold() for w in (want if isinstance(want, list) else [want])]
        if str(value).casefold() not in options:
            return False
    return True


def classify(tp: Touchpoint, config: Mapping[str, Any] | None = None) -> str:
    """The channel group of a touchpoint.

    :param config: the ``[channel_groups]`` table; its ``rules`` replace the defaults.
    :returns: one of :data:`carecrm.core.model.vocab.CHANNEL_GROUPS` (or a practice's own).
    """
    rules = list((config or {}).get("rules") or DEFAULT_RULES)
    for rule in rules:
        if _matches(rule, tp):
            return str(rule["group"])
    if not any((tp.source, tp.medium, tp.gclid, tp.fbclid, tp.msclkid, tp.campaign)):
        return "direct"
    return "other"
