"""Allow `python -m mlops`."""

from mlops.cli import main

raise SystemExit(main())
