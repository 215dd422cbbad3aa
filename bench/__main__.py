"""`python -m bench`: build (or reuse) the dataset, run the scenarios, write the report."""

from __future__ import annotations

import sys

from bench.cli import main

sys.exit(main())
