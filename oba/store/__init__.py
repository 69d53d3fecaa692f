"""Where results live: one Parquet part per cell row, compacted files, leases, status, and cache folders.

* :mod:`~oba.store.results` — :class:`ResultStore` (write a part atomically, read rows back as one table);
* :mod:`~oba.store.scan` — listing loose parts and compacted files;
* :mod:`~oba.store.compaction`, :mod:`~oba.store.rolling_compaction` — folding parts, also while a run runs;
* :mod:`~oba.store.lease` — one writer of a kind per store;
* :mod:`~oba.store.status` — what ``oba status`` counts;
* :mod:`~oba.store.cache_folder`, :mod:`~oba.store.atomic_write`, :mod:`~oba.store.paths` — files and locations.
"""
