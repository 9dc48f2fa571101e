"""Scores, attribution and segments: the scoring-model contract and service, the attribution-model
contract, engine and service, segment filter trees (:mod:`.criteria`) and the segments service.
"""
