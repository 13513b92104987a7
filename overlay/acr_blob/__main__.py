"""``python -m acr_blob``: the ``acr-blob`` command."""

import sys

from .cli import main

sys.exit(main())
