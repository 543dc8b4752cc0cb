"""`python -m attribution ...`: see `attribution.cli`."""

from attribution.cli import main

raise SystemExit(main())
