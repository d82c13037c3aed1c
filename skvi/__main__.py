"""``python -m skvi``: the command line (see :mod:`skvi._cli`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
