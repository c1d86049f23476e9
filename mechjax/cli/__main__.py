"""`python -m mechjax.cli ...` runs the `mechjax` command."""

import sys

from mechjax.cli.main import main

sys.exit(main())
