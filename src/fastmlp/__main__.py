"""``python -m fastmlp``: the ``fastmlp`` command (see :mod:`fastmlp.cli`)."""
import sys

from fastmlp.cli import main

if __name__ == "__main__":
    sys.exit(main())
