"""`python -m mailmux` is the `mailmux` command."""

import sys

from mailmux.cli import main

sys.exit(main())
