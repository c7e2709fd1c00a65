"""``python -m interpret …``: runs the command line of ``interpret.cli.main``."""
from __future__ import annotations

from interpret.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
