"""Training and where models come from: the recipes, dense checkpoints and golden fixtures, the device a process
uses and whether it still works, and data-parallel scoring and fine-tuning on Ray Train workers.

* :mod:`~oba.training.train` — train, fine-tune, evaluate;
* :mod:`~oba.training.checkpoints` — the dense-checkpoint cache (trained or pretrained, SHA-256 named);
* :mod:`~oba.training.dense_fixtures` — committed dense weights a suite loads instead of training;
* :mod:`~oba.training.execution`, :mod:`~oba.training.device_health` — devices, determinism, memory;
* :mod:`~oba.training.data_parallel` — scoring and fine-tuning sharded over workers.
"""
