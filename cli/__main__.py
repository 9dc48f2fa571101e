"""``python -m carecrm.cli``: the same command line as the ``carecrm`` console script."""

from __future__ import annotations

from carecrm.cli.main import main

if __name__ == "__main__":
    main()
