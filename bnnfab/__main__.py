"""``python -m bnnfab`` is the ``bnnfab`` command."""

import sys

from .cli import main

sys.exit(main())
