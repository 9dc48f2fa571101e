"""carecrm benchmarks: end-to-end figures printed beside baselines measured in the same run.

Run them from the repository root::

    .venv/bin/python benchmarks/ingest.py --n 5000 --repeat 3
    .venv/bin/python benchmarks/timeline.py --contacts 100000 --interactions 1000000 --repeat 3

Each module has a ``main(argv)`` function (used by ``tests/benchmarks/test_benchmarks_smoke.py``).
Results and their reading are in ``docs/performance.md``.
"""
