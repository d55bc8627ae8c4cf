"""
Twisted's port forwarder, the TCP baseline of bench/run.py.

    python bench/twisted_portforward.py LISTEN_PORT ORIGIN_PORT

Listens on 127.0.0.1:LISTEN_PORT and relays each connection to
127.0.0.1:ORIGIN_PORT with C{twisted.protocols.portforward}, as C{twistd
portforward} does, but without its log line for each upstream connection
("Starting factory ..."), so that the baseline pays no logging that txproxy's
TCP listener does not.
"""

import sys

from twisted.internet import reactor
from twisted.protocols import portforward


def main(argv: list[str]) -> None:
    """
    Forward 127.0.0.1:C{argv[1]} to 127.0.0.1:C{argv[2]} until stopped.
    """
    listen_port, origin_port = int(argv[1]), int(argv[2])
    portforward.ProxyClientFactory.noisy = False
    factory = portforward.ProxyFactory("127.0.0.1", origin_port)
    factory.noisy = False
    reactor.listenTCP(listen_port, factory, interface="127.0.0.1")
    print(f"portforward 127.0.0.1:{listen_port} -> 127.0.0.1:{origin_port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
