"""`python -m bali_jax <command>`: see bali_jax/cli.py."""

import sys

from bali_jax.cli import main

if __name__ == "__main__":
  sys.exit(main())
