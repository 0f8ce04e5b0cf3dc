"""`python -m launch ...` is `jaxtts-launch ...` (launch/launcher.py)."""

import sys

from launch.launcher import main

sys.exit(main())
