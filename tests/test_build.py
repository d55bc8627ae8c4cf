"""
Tests for how txproxy was installed: its sans-IO HTTP modules compiled by
mypyc (setup.py), or plain Python where that cannot be built.
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from txproxy.http import events, headers, parsing, paths, writing

# setup.py's COMPILED, as modules.
COMPILED = [events, headers, parsing, paths, writing]


def compiled(module: ModuleType) -> bool:
    """
    Whether C{module} was loaded from a C extension rather than its source.
    """
    return (module.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))


class CompiledModulesTests(SynchronousTestCase):
    """
    The modules setup.py compiles are compiled all together or not at all,
    and in the form the test environment expects.
    """

    def test_all_or_none(self) -> None:
        """
        Each compiled module needs mypyc's shared library, which the build
        makes for all of them at once: a build that failed part-way must
        leave none compiled.
        """
        forms = {module.__name__: compiled(module) for module in COMPILED}
        self.assertIn(set(forms.values()), ({True}, {False}), forms)

    def test_expected_form(self) -> None:
        """
        With C{TXPROXY_EXPECT_COMPILED} set (as tox sets it), the modules are
        in that form: a compile that fell back to plain Python fails here
        rather than passing unseen.
        """
        expected = os.environ.get("TXPROXY_EXPECT_COMPILED")
        if expected is None:
            raise SkipTest("TXPROXY_EXPECT_COMPILED is not set (tox sets it)")
        self.assertEqual(
            [compiled(module) for module in COMPILED],
            [expected == "1"] * len(COMPILED),
            [module.__file__ for module in COMPILED],
        )
