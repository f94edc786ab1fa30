"""``python -m parity.bench``: see parity/bench/__init__.py."""
from ddpm_core.cli import exit_after_main
from parity.bench.cli import main

exit_after_main(main())
