"""``python -m leakless``: the ``leakless`` command line, run in this process."""

import signal
import sys

from . import _leakless


def main() -> int:
    # Ctrl-C stops the command as it stops the binary (the next run
    # cleans up after it), not at Python's next bytecode.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    return _leakless.cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
