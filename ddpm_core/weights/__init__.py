"""The weights room: a U-Net's weights between PyTorch, MindSpore and files, and how they are trusted.

``naming`` (the one parameter table), ``mapping`` (the weight-mapping engine: the U-Net's table is its explicit
map, and ``parity.pair`` maps any pair with it), ``converter`` (strict renaming and casting between the two
namings, through that map),
``extras`` (training extras a checkpoint may carry), ``files`` (``load_weights``/``save_weights``), ``formats``,
``ckpt`` and ``tensor_headers`` (the three file formats, read without their frameworks where possible),
``integrity`` (manifests, sidecars, plausibility), ``recorded`` (the settings recorded with weights) and
``digest`` (the project's one digest, also used by the training room and the harness).

Rule: weights are ``{name: numpy array}`` here; a framework is imported only inside the reader or writer of its
own format, never at import time; every weight problem is one ``ddpm_core.errors.WeightsError``.
"""
