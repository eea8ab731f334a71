"""``python -m query_dsl``."""

import sys

from query_dsl.cli import main

sys.exit(main())
