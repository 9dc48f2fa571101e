"""Alembic revision files of the carecrm SQL schema, oldest first (``0001_initial``, ...)."""
