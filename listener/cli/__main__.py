"""``python -m listener.cli``: the ``blockhost`` command."""

import sys

from listener.cli.main import main

sys.exit(main())
