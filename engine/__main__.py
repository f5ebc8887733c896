"""python -m engine: command-line interface of the block-delta engine."""

import sys

from .cli import main

sys.exit(main())
