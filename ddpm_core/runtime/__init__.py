"""The runtime room: where and how a command runs, and how it writes its files.

``environment`` (the process-environment policy), ``frameworks`` (which extra brings which framework),
``devices`` and ``amp`` (device and precision names), ``memory`` (what a request needs and the machine has),
``distributed`` and ``launch`` (data-parallel jobs and their launchers), ``paths`` and ``atomic`` (output paths
checked before any work, every file written whole or not at all).

Rule: policy only, by name, in numpy and the standard library: the twins' own ``device``, ``amp`` and
``distributed`` modules are the only code that turns these names into framework calls.
"""
