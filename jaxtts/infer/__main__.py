"""`python -m jaxtts.infer` = `jaxtts-synthesize`."""

import sys

from jaxtts.infer.cli import main

sys.exit(main())
