"""Entry script of the frozen app (PyInstaller runs this file)."""
import multiprocessing
import sys

from fssgui.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
