"""``python -m fssgui``: the same as the ``fssgui`` command (the app's training dialog starts
``python -m fssgui train ... --events`` as its child process when not running from a bundle)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
