import sys

from deploy.validate.cli import main

sys.exit(main())
