# -*- test-case-name: tests.test_check -*-
"""
Validate a configuration file and report every error, as C{nginx -t} does.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from txproxy.config import InvalidConfiguration, load
from txproxy.tls import certificate_errors


def check(path: str, out: TextIO) -> int:
    """
    Load C{path}, write what is wrong with it (or that it is fine) to C{out}.

    @return: the exit status: 0 when the file is valid, 1 when it is not.
    """
    try:
        proxy = load(path)
    except InvalidConfiguration as invalid:
        for error in invalid.errors:
            out.write(f"{error}\n")
        out.write(f"{path}: configuration has {len(invalid.errors)} error(s)\n")
        return 1
    unusable = certificate_errors(proxy)
    if unusable:
        for problem in unusable:
            out.write(f"{problem}\n")
        out.write(f"{path}: configuration has {len(unusable)} unusable TLS file(s)\n")
        return 1
    out.write(
        f"{path}: configuration ok: {len(proxy.listeners)} listener(s), "
        f"{len(proxy.pools)} pool(s)\n"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """
    The C{txproxy-check FILE} command.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if len(arguments) != 1:
        sys.stderr.write("usage: txproxy-check FILE\n")
        return 2
    return check(arguments[0], sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
