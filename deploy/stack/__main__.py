"""Entry point so that ``python3 -m deploy.stack`` works from the repo root."""

import sys

from deploy.stack.cli import main

sys.exit(main())
