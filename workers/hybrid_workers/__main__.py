"""`python -m hybrid_workers` runs the `hybrid-inference` command."""

import sys

from hybrid_workers.cli import main

sys.exit(main())
