"""``python -m bot`` is the ``appealwatch`` command."""

from bot.cli import main

raise SystemExit(main())
