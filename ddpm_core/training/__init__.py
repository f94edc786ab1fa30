"""The training room: the framework-neutral half of ``python -m ddpm_<twin>.train``.

``loop`` (the loop both twins run), ``settings`` (a run's settings, new or resumed), ``tape`` (the per-step
random tape), ``run_folder`` (a run's folder, records and checkpoints), ``datasets``, ``digits`` and
``download`` (the training data, checked before any framework loader sees it).

Rule: a twin supplies only its framework (its ``Trainer`` and ``TrainingData``, ``ddpm_core.contract``);
everything that decides a run's loss curve, its files and its data is written once, here, in numpy.
"""
