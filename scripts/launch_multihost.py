"""Run one JAX job as several local processes (loopback, gloo CPU collectives).

    python scripts/launch_multihost.py                       # built-in check: 2 x 4 devices
    python scripts/launch_multihost.py --num-processes 2 --devices-per-process 4
    python scripts/launch_multihost.py --simulate-failure 1:forward   # peer-loss drill
    python scripts/launch_multihost.py -- my_experiment.py --flag     # your own program

A thin wrapper around `mechjax.launch.main`; see docs/scaling.md.
"""

import sys

from mechjax.launch import main

if __name__ == "__main__":
    sys.exit(main())
