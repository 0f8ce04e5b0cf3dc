import sys
from jaxtts.train.cli import main
sys.exit(main())
