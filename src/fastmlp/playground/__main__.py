"""``python -m fastmlp.playground`` is ``fastmlp playground``."""
import sys

from fastmlp.cli import main

sys.exit(main(["playground"] + sys.argv[1:]))
