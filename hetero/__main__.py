"""python -m hetero: the same as the hetero command."""

import sys

from hetero.app.cli import main

sys.exit(main())
