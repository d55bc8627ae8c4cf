"""
TLS to the servers: txproxy verifies each server's certificate with
service_identity (for a name, or for an IP address), sends SNI, and can
present a client certificate of its own.

    twistd -n txproxy --config etc/examples/upstream_tls.py
    curl http://127.0.0.1:8080/

A server whose certificate does not verify gets no request: the client gets
502, and the log names the server and the reason, for example
C{TLS with server 10.0.0.5:443 failed: ... certificate verify failed}.
"""

from txproxy.config import Certificate, HTTPListener, Pool, Proxy, Route, Server, UpstreamTLS

internal = UpstreamTLS(
    ca="/etc/ssl/internal-ca.pem",  # None: the system's authorities
    server_name="api.internal",  # sent by SNI and verified; None: the server's host
    client_certificate=Certificate(cert="/etc/ssl/proxy.pem", key="/etc/ssl/proxy.key"),
)

api = Pool(
    "api",
    servers=[
        Server("10.0.0.5:443", tls=internal),
        Server("10.0.0.6:443", tls=internal),
        # verify=False is the only way to skip verification; say why beside it.
        Server("10.0.0.7:443", tls=UpstreamTLS(verify=False), backup=True),
    ],
)

proxy = Proxy(listeners=[HTTPListener("tcp:8080:interface=127.0.0.1", routes=[Route(api)])])
