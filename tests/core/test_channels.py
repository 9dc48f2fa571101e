from __future__ import annotations

from carecrm.core.model.channels import classify
from carecrm.core.model.domain import Touchpoint


def test_default_channel_groups() -> None:
    assert classify(Touchpoint(source="google", medium="cpc", gclid="x")) == "paid_search"
    assert classify(Touchpoint(source="facebook", medium="paid_social")) == "paid_social"
    assert classify(Touchpoint(source="google", medium="organic")) == "organic_search"
    assert classify(Touchpoint(source="newsletter", medium="email")) == "email"
    assert classify(Touchpoint(source="yelp")) == "local_listing"
    assert classify(Touchpoint(landing_page="https://derm.example/")) == "direct"
    assert classify(Touchpoint(source="partner-site", medium="banner-swap")) == "other"


def test_rules_are_data() -> None:
    rules = {"rules": [{"source": ["dr-lee"], "group": "referral_physician"}]}
    assert classify(Touchpoint(source="Dr-Lee"), rules) == "referral_physician"
