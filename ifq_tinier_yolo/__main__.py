"""`python -m ifq_tinier_yolo` -> cli.main."""
import sys

from .cli import main

sys.exit(main())
