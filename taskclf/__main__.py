"""``python -m taskclf``: the same as the ``taskclf`` command."""

from taskclf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
