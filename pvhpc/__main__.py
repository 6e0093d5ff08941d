import sys

from pvhpc.cli import main

sys.exit(main())
