"""``python -m cnnkit ...`` (also what torchrun runs: ``torchrun -m cnnkit train``)."""

import sys

from cnnkit.cli import main

sys.exit(main())
