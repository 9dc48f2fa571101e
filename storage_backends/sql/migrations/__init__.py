"""Alembic migrations of the carecrm SQL schema.

Run programmatically by :mod:`carecrm.storage_backends.sql.migrate` (``carecrm storage
upgrade``); no ``alembic.ini`` is needed.  A new step is a new file in ``versions/`` whose
``revision`` is ``"NNNN_<what>"``; when it changes what carecrm reads or writes, it also
raises :data:`carecrm.core.storage.contract.SCHEMA_VERSION` and
:data:`carecrm.storage_backends.sql.migrate.HEAD_FOR_VERSION`.
"""
