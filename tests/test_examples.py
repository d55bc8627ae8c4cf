"""
Every configuration shipped in C{etc/} loads without error.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from txproxy import config

ETC = Path(__file__).parent.parent / "etc"


class ExamplesTests(SynchronousTestCase):
    """
    The default configuration and each file of C{etc/examples/}.
    """

    def test_all_load(self) -> None:
        """
        Each file loads into a L{config.Proxy}.
        """
        paths = [ETC / "txproxy.py", *sorted((ETC / "examples").glob("*.py"))]
        self.assertGreaterEqual(len(paths), 3)
        for path in paths:
            self.assertIsInstance(config.load(str(path)), config.Proxy, path)
