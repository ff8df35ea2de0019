"""``python -m resilience_mw``: the command line (:mod:`resilience_mw.fleet.cli`)."""

from .fleet.cli import main

raise SystemExit(main())
