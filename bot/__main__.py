"""`python -m bot` is the same as the `waystation` command."""

from bot.cli import main

raise SystemExit(main())
