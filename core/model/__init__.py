"""The domain model and the values every part shares: domain objects (:mod:`.domain`), stored records
(:mod:`.records`), vocabularies and channel groups, ids and short ids, UTC time, text from outside,
and the private cattrs converters.
"""
