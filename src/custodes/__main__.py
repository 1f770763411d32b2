"""``python -m custodes`` is the ``custodes`` command."""

from custodes.cli import main

raise SystemExit(main())
