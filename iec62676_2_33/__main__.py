"""``python -m iec62676_2_33`` runs the CLI."""

import sys

from .cli import main

sys.exit(main())
