"""
A bare Twisted TLS server with txproxy's server context, the TLS reference of bench/run.py.

    python bench/twisted_tls.py LISTEN_PORT CERTIFICATE

Listens on 127.0.0.1:LISTEN_PORT with the context txproxy's TLS listener makes
for CERTIFICATE (L{txproxy.tls.ServerTLS}: the same options, ciphers, groups,
session cache, SNI and ALPN callbacks), through the same
C{TLSMemoryBIOFactory}, and answers every HTTP/1.1 request itself with a
fixed 200: /large gets 64 KiB, any other path 100 bytes, as the origin's
files. Nothing is proxied, so what it costs per connection is what Twisted
and pyOpenSSL cost around OpenSSL: the ceiling of any Twisted TLS server.

Its ALPN offers http/1.1 alone: it speaks no HTTP/2. It answers in the
reactor turn in which the handshake ends, so its answer leaves in one write
with the TLS 1.3 session tickets; a proxy, which first asks an upstream,
writes it later, on its own.

It reads only GET heads without bodies and does not pipeline: enough for
wrk, openssl s_time and the probes, and nothing more.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

from txproxy import config
from txproxy.tls import ServerTLS

SMALL = b"s" * 99 + b"\n"
LARGE = b"l" * (64 * 1024 - 1) + b"\n"
HEAD_LIMIT = 16 * 1024


class Answer(Protocol):
    """
    Answers each request head with the body its path names.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            request_line, *fields = head.split(b"\r\n")
            parts = request_line.split(b" ")
            if len(parts) != 3:
                self.transport.loseConnection()
                return
            _, path, version = parts
            close = version == b"HTTP/1.0" or any(
                name.strip().lower() == b"connection" and value.strip().lower() == b"close"
                for name, _, value in (field.partition(b":") for field in fields)
            )
            body = LARGE if path == b"/large" else SMALL
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n%s\r\n%s"
                % (len(body), b"Connection: close\r\n" if close else b"", body)
            )
            if close:
                self.transport.loseConnection()
                return
        if len(self._buffer) > HEAD_LIMIT:
            self.transport.loseConnection()


def main(argv: list[str]) -> None:
    """
    Serve TLS on 127.0.0.1:C{argv[1]} with the certificate file C{argv[2]} until stopped.
    """
    listen_port, certificate = int(argv[1]), argv[2]
    tls = ServerTLS(config.TLS(certificates=[certificate]), (b"http/1.1",))
    answers = Factory.forProtocol(Answer)
    answers.noisy = False
    factory = TLSMemoryBIOFactory(tls, False, answers)
    factory.noisy = False
    reactor.listenTCP(listen_port, factory, interface="127.0.0.1")
    print(f"Twisted TLS 127.0.0.1:{listen_port}, txproxy's context", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
