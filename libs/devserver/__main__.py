"""``python -m libs.devserver [options]``: the same as ``qe-worker server``."""

import sys

from ._cli import serve

sys.exit(serve())
