"""Shared machinery under every criterion and every stage (never imports a criterion, the suite or the store).

* :mod:`~oba.core.groups` — :class:`Group` / :class:`ParamSlice`: which parameter entries a unit owns;
* :mod:`~oba.core.model_calls` — batches, losses and the scoring context (mode, math attention, double-backward
  activations from :mod:`~oba.core.activations`);
* :mod:`~oba.core.curvature` — gradients, Hessian-vector products, per-sample gradients, probes;
* :mod:`~oba.core.connectivity` — OBA's layer-wise Hessian through the network's bilinear products;
* :mod:`~oba.core.measure` — MACs, parameters, latency, timing, the gradient pass scoring time is reported in;
* :mod:`~oba.core.memory_format` — the memory format a model runs in (channels-last for 2-d convolutions);
* :mod:`~oba.core.recalibration` — batch-norm statistics recomputed after pruning.
"""
