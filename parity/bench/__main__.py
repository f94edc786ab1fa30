"""``python -m parity.bench``: see parity/bench/__init__.py."""
import sys

from parity.bench.cli import main

sys.exit(main())
