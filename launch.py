#!/usr/bin/env python3
"""wmsub entry point: `python launch.py --help`."""
import sys

from wmsub.cli import main

if __name__ == "__main__":
    sys.exit(main())
