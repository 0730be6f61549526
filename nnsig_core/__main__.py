"""``python -m nnsig_core`` is the ``nnsig`` command."""

import sys

from nnsig_core.cli import main

sys.exit(main())
