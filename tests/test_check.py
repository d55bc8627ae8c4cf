"""
Tests for L{txproxy.check}: the C{txproxy-check} command.
"""

from __future__ import annotations

import io
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from txproxy.check import check, main

TWO_MISTAKES = """\
from txproxy.config import Pool, Proxy, Server, TCPListener
pool = Pool("db", servers=[Server("127.0.0.1:5432", weight=0)], balancer="fastest")
proxy = Proxy(listeners=[TCPListener("tcp:0:interface=127.0.0.1", pool=pool)])
"""


class CheckTests(SynchronousTestCase):
    """
    Tests for L{check} and L{main}.
    """

    def test_every_error_printed(self) -> None:
        """
        Each mistake is printed on its own line with file, line and field, then
        a count; the status is 1.
        """
        path = Path(self.mktemp())
        path.write_text(TWO_MISTAKES)
        out = io.StringIO()
        self.assertEqual(check(str(path), out), 1)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[0].startswith(f"{path}:2: Server('127.0.0.1:5432'): weight: "))
        self.assertTrue(lines[1].startswith(f"{path}:2: Pool('db'): balancer: "))
        self.assertEqual(lines[2], f"{path}: configuration has 2 error(s)")

    def test_valid(self) -> None:
        """
        A valid file is reported with its listener and pool counts; the status is 0.
        """
        path = Path(__file__).parent.parent / "etc" / "examples" / "tcp.py"
        out = io.StringIO()
        self.assertEqual(check(str(path), out), 0)
        self.assertEqual(out.getvalue(), f"{path}: configuration ok: 1 listener(s), 1 pool(s)\n")

    def test_usage(self) -> None:
        """
        Without exactly one file argument, the command exits 2.
        """
        self.assertEqual(main([]), 2)
