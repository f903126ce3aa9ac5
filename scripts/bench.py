#!/usr/bin/env python
"""greenredis vs redis-py: ``python scripts/bench.py --help`` (same as ``greenredis bench``)."""

import sys

from greenredis.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
