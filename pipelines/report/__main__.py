"""``python -m pipelines.report [options]``: the same as ``hrnet report [options]``."""

import sys

from .cli import main

sys.exit(main())
