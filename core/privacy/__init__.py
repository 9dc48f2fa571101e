"""Protecting personal data: field encryption and blind indexes (:mod:`.crypto`), the record mapper
(:mod:`.mapping`), the one read path that decrypts for an actor and a purpose (:mod:`.read_path`) and
the hash-chained audit trail (:mod:`.audit`).  HIPAA 45 CFR 164.312(a)(2)(iv) and 164.312(b).
"""
