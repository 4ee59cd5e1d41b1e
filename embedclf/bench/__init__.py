"""Benchmark harness behind ``embedclf bench embed|e2e|train``.

Modules:

* :mod:`.machine` -- the ``machine`` block every report carries;
* :mod:`.stats` -- percentiles and batch-size distributions (pure);
* :mod:`.raw` -- raw ``embed_batch`` throughput, in file order, as a worker sees texts;
* :mod:`.infra` -- a throw-away Postgres database and a free Redis DB index;
* :mod:`.procs` -- worker and producer subprocesses;
* :mod:`.e2e` -- the end-to-end run (producer -> Redis -> workers -> Postgres);
* :mod:`.train` -- head training time on cached embeddings;
* :mod:`.report` -- human-readable output.

Nothing here is a timed test: the CLI prints figures, the tests only check they are sane.
"""

from __future__ import annotations

from embedclf.errors import BenchError  # noqa: F401  (re-exported: defined in errors.py)

