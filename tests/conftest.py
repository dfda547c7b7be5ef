"""Test-tree setup: make ``tests/gradcheck.py`` importable, and the packages if not installed.

Ctrl-C tests send SIGINT to child processes. A shell that starts the suite in the background
ignores SIGINT, and an ignored signal stays ignored in every child (Python then installs no
KeyboardInterrupt handler), so the suite restores Python's handler for itself and its children.

The packages are normally installed editable (``pip install -e ".[test]"``), so the repository
root is added to ``sys.path`` only when ``mlp`` cannot be imported otherwise.
"""

import importlib.util
import signal
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

if str(TESTS) not in sys.path:  # for ``from gradcheck import ...`` under any import mode
    sys.path.insert(0, str(TESTS))
if importlib.util.find_spec("mlp") is None:
    sys.path.insert(0, str(ROOT))

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
