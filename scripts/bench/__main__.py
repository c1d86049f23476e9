"""`python scripts/bench ...`: the benchmark's entry point (see `bench.common`)."""

import sys
from pathlib import Path

# run as a directory, so make `bench` importable as a package from its parent folder
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cli import main  # noqa: E402

sys.exit(main())
