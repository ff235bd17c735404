"""`python -m headprune ...` (also what `torchrun -m headprune ...` runs on every process)."""
import sys

from .cli import main

sys.exit(main())
