"""``python -m hrnet_cli``: the same as the ``hrnet`` console script."""

import sys

from .main import main

sys.exit(main())
