"""`python -m headprune.cli ...`, the same as `headprune ...`."""
import sys

from . import main

sys.exit(main())
