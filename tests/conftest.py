"""Suite-wide pytest configuration.

Tests under ``tests/e2e/`` get the ``e2e`` marker automatically, so ``-m "not e2e"`` runs only
the fast unit and integration tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).parent / "e2e"
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:   # `tests.support` for every test module, whichever is run alone
    sys.path.insert(0, ROOT)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
