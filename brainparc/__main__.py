"""``python -m brainparc``."""

from brainparc.cli.main import main

raise SystemExit(main())
