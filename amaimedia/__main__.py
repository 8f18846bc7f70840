"""`python -m amaimedia`: the same as the `amaimedia` command."""

from amaimedia._cli import main

raise SystemExit(main())
