"""`python -m hotline` runs the hotline command."""
import sys

from .cli import main

sys.exit(main())
