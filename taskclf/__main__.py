"""``python -m taskclf``: the same as the ``taskclf`` command."""

from taskclf.cli import main

raise SystemExit(main())
