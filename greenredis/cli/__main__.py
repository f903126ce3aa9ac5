import sys

from greenredis.cli import main

sys.exit(main())
