"""
Twisted's own HTTP reverse proxy, the HTTP baseline of bench/run.py.

    python bench/twisted_reverse_proxy.py LISTEN_PORT ORIGIN_PORT

Serves C{twisted.web.proxy.ReverseProxyResource} on 127.0.0.1:LISTEN_PORT for
the origin on 127.0.0.1:ORIGIN_PORT. It opens one upstream connection per
request and reads each body whole, which is why txproxy does not build on it.
The access log is off and the upstream factories are quiet, as for the
other targets.
"""

import sys

from twisted.internet import reactor
from twisted.web import proxy, server


class QuietSite(server.Site):
    """
    A site that writes no access log, as nginx runs with C{access_log off}.
    """

    def log(self, request: server.Request) -> None:
        """
        Log nothing.
        """


def main(argv: list[str]) -> None:
    """
    Proxy 127.0.0.1:C{argv[1]} to 127.0.0.1:C{argv[2]} until stopped.
    """
    listen_port, origin_port = int(argv[1]), int(argv[2])
    proxy.ProxyClientFactory.noisy = False
    site = QuietSite(proxy.ReverseProxyResource("127.0.0.1", origin_port, b""))
    reactor.listenTCP(listen_port, site, interface="127.0.0.1")
    print(f"ReverseProxyResource 127.0.0.1:{listen_port} -> 127.0.0.1:{origin_port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
