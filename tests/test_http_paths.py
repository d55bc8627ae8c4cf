"""
Tests for L{txproxy.http.paths}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txproxy.http.paths import PathEscapesRoot, normalize_target


class NormalizeTargetTests(SynchronousTestCase):
    """
    Tests for L{normalize_target}.
    """

    def test_plain_target_unchanged(self) -> None:
        """
        A target with nothing to normalise is returned as the same object.
        """
        target = b"/api/users?a=%41&b=//"
        self.assertIs(normalize_target(target), target)

    def test_unreserved_decoded(self) -> None:
        """
        Percent-encoded unreserved characters are decoded; reserved ones stay
        encoded, in upper case.
        """
        self.assertEqual(normalize_target(b"/%61dmin/%7euser"), b"/admin/~user")
        self.assertEqual(normalize_target(b"/a%2fb%3f"), b"/a%2Fb%3F")

    def test_slashes_merged(self) -> None:
        """
        Runs of slashes become one.
        """
        self.assertEqual(normalize_target(b"//admin///x"), b"/admin/x")

    def test_dot_segments_removed(self) -> None:
        """
        C{.} and C{..} segments are resolved, keeping the query as sent.
        """
        self.assertEqual(normalize_target(b"/x/../admin/./y?q=/../"), b"/admin/y?q=/../")
        self.assertEqual(normalize_target(b"/a/b/.."), b"/a/")
        self.assertEqual(normalize_target(b"/a/."), b"/a/")

    def test_encoded_dots_resolved(self) -> None:
        """
        Dots hidden by percent-encoding are decoded first, then resolved.
        """
        self.assertEqual(normalize_target(b"/x/%2e%2E/admin"), b"/admin")

    def test_escape_above_root_refused(self) -> None:
        """
        A path that climbs above the root is refused.
        """
        self.assertRaises(PathEscapesRoot, normalize_target, b"/../etc/passwd")
        self.assertRaises(PathEscapesRoot, normalize_target, b"/a/../../b")

    def test_dotted_names_kept(self) -> None:
        """
        Segments that only start with a dot are ordinary names.
        """
        target = b"/.well-known/x/..y"
        self.assertEqual(normalize_target(target), target)
