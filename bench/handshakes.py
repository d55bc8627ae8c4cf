"""
The server's CPU cost of one full TLS handshake and one request, in process, without sockets.

    python bench/handshakes.py [--count N] [--rounds N]

Each variant makes full TLS 1.3 handshakes (X25519, an ECDSA P-256
certificate sent with its intermediate, as bench/run.py's) between a client
and a server that pass their bytes through memory; after each, the client
sends a request and the server answers 100 bytes, as in bench/run.py's "TLS
new connections". Only the server's calls are timed: microseconds per
connection, best of the rounds.

- C{ssl, OpenSSL 3}: Python's ssl module, which uses the system's OpenSSL, as
  nginx and HAProxy do here: what OpenSSL 3.0 costs, with a thin C wrapper.
- C{pyOpenSSL, bare context}: pyOpenSSL on the OpenSSL that cryptography
  bundles (txproxy's), a context with the certificate and nothing else.
- C{pyOpenSSL, txproxy's context}: L{txproxy.tls.ServerTLS}'s connection,
  with its Python SNI callback, session cache and groups.
- C{Twisted TLSMemoryBIOProtocol, txproxy's context}: that connection inside
  Twisted's TLS protocol on a StringTransport, under a protocol that answers
  and closes: everything a Twisted TLS server does per connection but the
  reactor and the kernel.

The differences between the rows are what each layer adds: the OpenSSL
version, pyOpenSSL's binding, txproxy's callbacks, Twisted's TLS protocol.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from OpenSSL import SSL
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from txproxy import config
from txproxy.tls import ServerTLS

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import tls_files  # noqa: E402

REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n" + b"s" * 100

Handshake = Callable[[], float]
"""
Makes one connection and returns the seconds the server's side took.
"""


def _pyopenssl_client() -> SSL.Context:
    """
    A pyOpenSSL client context offering only X25519, so that no server picks
    the post-quantum hybrid group the bundled OpenSSL offers first.
    """
    from OpenSSL._util import lib

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    lib.SSL_CTX_set1_curves_list(context._context, b"X25519")
    return context


def _pump(source: SSL.Connection) -> bytes:
    """
    Everything C{source} has written into its memory BIO.
    """
    chunks = []
    while True:
        try:
            chunks.append(source.bio_read(65536))
        except SSL.WantReadError:
            return b"".join(chunks)


def _step(connection: SSL.Connection) -> None:
    """
    Run C{connection}'s handshake as far as its input allows.
    """
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass


def pyopenssl(make_server: Callable[[], SSL.Connection]) -> Handshake:
    """
    Handshakes between a pyOpenSSL client and a server made by C{make_server}.
    """
    client_context = _pyopenssl_client()

    def handshake() -> float:
        client = SSL.Connection(client_context, None)
        client.set_connect_state()
        _step(client)
        hello = _pump(client)
        started = time.perf_counter()
        server = make_server()
        server.set_accept_state()
        server.bio_write(hello)
        _step(server)
        flight = _pump(server)
        spent = time.perf_counter() - started
        client.bio_write(flight)
        _step(client)
        client.sendall(REQUEST)
        finished = _pump(client)
        started = time.perf_counter()
        server.bio_write(finished)
        _step(server)
        assert server.recv(65536) == REQUEST
        server.sendall(RESPONSE)
        answer = _pump(server)
        spent += time.perf_counter() - started
        client.bio_write(answer)
        assert client.recv(65536) == RESPONSE
        return spent

    return handshake


def bare_context(pem: Path) -> Callable[[], SSL.Connection]:
    """
    Connections of a pyOpenSSL context with the certificate and nothing else.
    """
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(str(pem))
    context.use_privatekey_file(str(pem))
    return lambda: SSL.Connection(context, None)


def txproxy_context(pem: Path) -> Callable[[], SSL.Connection]:
    """
    Connections as txproxy's TLS listener makes them.
    """
    tls = ServerTLS(config.TLS(certificates=[str(pem)]), (b"h2", b"http/1.1"))
    return lambda: tls.serverConnectionForTLS(None)


def python_ssl(pem: Path) -> Handshake:
    """
    Handshakes between two of Python's ssl objects: the system's OpenSSL.
    """
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(pem))
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE

    def step(connection: ssl.SSLObject) -> None:
        try:
            connection.do_handshake()
        except ssl.SSLWantReadError:
            pass

    def handshake() -> float:
        to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        from_server, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_context.wrap_bio(to_client, from_client)
        step(client)
        started = time.perf_counter()
        server = server_context.wrap_bio(to_server, from_server, server_side=True)
        to_server.write(from_client.read())
        step(server)
        flight = from_server.read()
        spent = time.perf_counter() - started
        to_client.write(flight)
        step(client)
        client.write(REQUEST)
        finished = from_client.read()
        started = time.perf_counter()
        to_server.write(finished)
        step(server)
        assert server.read(65536) == REQUEST
        server.write(RESPONSE)
        answer = from_server.read()
        spent += time.perf_counter() - started
        to_client.write(answer)
        assert client.read(65536) == RESPONSE
        return spent

    return handshake


class Answer(Protocol):
    """
    Answers the first request and closes, as twisted_tls.py does with C{Connection: close}.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(RESPONSE)
        self.transport.loseConnection()


def twisted_protocol(pem: Path) -> Handshake:
    """
    Handshakes with txproxy's context inside Twisted's TLSMemoryBIOProtocol.
    """
    tls = ServerTLS(config.TLS(certificates=[str(pem)]), (b"h2", b"http/1.1"))
    factory = TLSMemoryBIOFactory(tls, False, Factory.forProtocol(Answer))
    factory.noisy = False
    client_context = _pyopenssl_client()

    def handshake() -> float:
        client = SSL.Connection(client_context, None)
        client.set_connect_state()
        _step(client)
        hello = _pump(client)
        transport = StringTransport()
        started = time.perf_counter()
        server = factory.buildProtocol(None)
        server.makeConnection(transport)
        server.dataReceived(hello)
        spent = time.perf_counter() - started
        client.bio_write(transport.value())
        transport.clear()
        _step(client)
        client.sendall(REQUEST)
        finished = _pump(client)
        started = time.perf_counter()
        server.dataReceived(finished)
        spent += time.perf_counter() - started
        client.bio_write(transport.value())
        assert client.recv(65536) == RESPONSE
        return spent

    return handshake


def measure(handshake: Handshake, count: int, rounds: int) -> float:
    """
    Microseconds of the server's side per connection, best of C{rounds} of C{count}.
    """
    for _ in range(20):
        handshake()
    best = float("inf")
    for _ in range(rounds):
        best = min(best, sum(handshake() for _ in range(count)) / count)
    return best * 1e6


def main(argv: list[str]) -> None:
    """
    Print each variant's microseconds per connection, and its ratio to the first.
    """
    parser = argparse.ArgumentParser(prog="python bench/handshakes.py")
    parser.add_argument("--count", type=int, default=300, help="handshakes a round (300)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds, the best kept (7)")
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="txproxy-handshakes-") as directory:
        pem = tls_files(Path(directory)).certificate
        bundled = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
        variants = [
            (f"ssl, {ssl.OPENSSL_VERSION}", python_ssl(pem)),
            (f"pyOpenSSL, bare context, {bundled}", pyopenssl(bare_context(pem))),
            ("pyOpenSSL, txproxy's context", pyopenssl(txproxy_context(pem))),
            ("Twisted TLSMemoryBIOProtocol, txproxy's context", twisted_protocol(pem)),
        ]
        first = None
        for name, handshake in variants:
            spent = measure(handshake, arguments.count, arguments.rounds)
            first = first or spent
            print(f"{spent:7.0f} us  x{spent / first:4.2f}  {name}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
