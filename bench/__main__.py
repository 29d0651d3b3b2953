"""`python -m bench ...` is the same as the `ssamba-bench` console script."""

import sys

from bench.cli import main

sys.exit(main())
