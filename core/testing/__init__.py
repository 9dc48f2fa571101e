"""Test helpers shipped with carecrm, for its own tests and for third-party plugins.

* :mod:`carecrm.core.testing.storage` — the storage conformance suite
  (``StorageBackendContract``) every backend passes;
* :mod:`carecrm.core.testing.sources` — the connector contract kit: a folder of payloads
  with ``.expected.json`` files drives a source connector's tests;
* :mod:`carecrm.core.testing.pytest_plugin` — the ``pytest11`` plugin with the
  ``carecrm_sqlite_backend`` fixture and the summary of tests skipped for want of a resource;
* :mod:`carecrm.core.testing.resources` — where the vendor corpus is
  (``CARECRM_TEST_CORPUS``), its skip marks, and the skip summary.
"""
