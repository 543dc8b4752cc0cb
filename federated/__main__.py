import sys

from federated.cli import main

sys.exit(main())
