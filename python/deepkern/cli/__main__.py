"""``python -m deepkern.cli`` runs the ``deepkern`` command."""
import sys

from . import main

sys.exit(main())
