"""`python -m steertown ...` = the `steertown` command."""

import sys

from steertown.cli import main

sys.exit(main())
