# -*- test-case-name: tests.test_http_paths -*-
"""
Request-target normalisation, so that routes match the path the server will see.
"""

from __future__ import annotations

import re

# RFC 3986 section 2.3: unreserved characters, which percent-encoding must not
# hide from a route (section 6.2.2.2).
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(rb"//+")


class PathEscapesRoot(ValueError):
    """
    A path whose dot-segments climb above C{/}: no server path can mean that.
    """


def _decode_unreserved(match: re.Match[bytes]) -> bytes:
    byte = int(match.group(1), 16)
    if byte in _UNRESERVED:
        return bytes((byte,))
    return b"%" + match.group(1).upper()


def _remove_dot_segments(path: bytes) -> bytes:
    """
    RFC 3986 section 5.2.4, for an absolute path.

    @raise PathEscapesRoot: when C{..} climbs above the root.
    """
    output: list[bytes] = []
    segments = path.split(b"/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == b".":
            if last:
                output.append(b"")
        elif segment == b"..":
            if not output:
                raise PathEscapesRoot(path)
            output.pop()
            if last:
                output.append(b"")
        else:
            output.append(segment)
    return b"/" + b"/".join(output)


def normalize_target(target: bytes) -> bytes:
    """
    The origin-form C{target} with its path normalised, or C{target} itself
    when nothing changes (the common case costs three substring searches).

    Percent-encoded unreserved characters are decoded, runs of slashes merged
    and dot-segments removed, as nginx does before matching locations, so that
    C{/%61dmin/}, C{//admin/} and C{/x/../admin/} all meet the route of
    C{/admin/}. Encoded reserved characters such as C{%2F} stay encoded. The
    query is left alone.

    @raise PathEscapesRoot: when the path climbs above C{/}.
    """
    path, question, query = target.partition(b"?")
    if b"%" not in path and b"//" not in path and b"/." not in path:
        return target
    normal = path
    if b"%" in normal:
        normal = _ESCAPE.sub(_decode_unreserved, normal)
    if b"//" in normal:
        normal = _SLASHES.sub(b"/", normal)
    if b"/." in normal:
        normal = _remove_dot_segments(normal)
    if normal == path:
        return target
    return normal + question + query
