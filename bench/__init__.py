"""bench: the PruneTrain benchmark harness (hardware, profiles, data, training loop, records, reports).

The library API is :func:`bench.run.run_benchmark` and :func:`bench.report.build_report`;
the ``bench`` command line (bench.cli) is a thin layer over them.
"""

__version__ = "0.1.0"
