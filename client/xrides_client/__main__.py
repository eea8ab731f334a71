import sys

from xrides_client.cli import main

sys.exit(main())
