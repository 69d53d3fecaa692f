"""Running a suite: suite file → cells → trials → one row per cell in the store.

* :mod:`~oba.suite.config` and :mod:`~oba.suite.grids` — the suite file, validated before any compute;
* :mod:`~oba.suite.cells` — the grid expanded into cells, each with a stable id;
* :mod:`~oba.suite.plan` — what a run will do, checked before it starts;
* :mod:`~oba.suite.runner`, :mod:`~oba.suite.packing`, :mod:`~oba.suite.trial` — cells packed into Ray Tune trials;
* :mod:`~oba.suite.cell` and :mod:`~oba.suite.context` — one cell's pipeline and what cells of one dense model share.
"""
