"""``python -m bnnfab.models.train``: ``bnnfab train`` on its own."""

import sys

from .cli import main

sys.exit(main())
