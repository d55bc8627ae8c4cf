"""
TLS passthrough by SNI: one port, several TLS services, chosen by the name the
client asks for, without decrypting (the servers hold their own certificates).

    twistd -n txproxy --config etc/examples/tls_passthrough.py
    openssl s_client -connect 127.0.0.1:8443 -servername db.example.com </dev/null
    curl --resolve www.example.net:8443:127.0.0.1 https://www.example.net:8443/

`*.example.net` takes any name below example.net, as nginx's `server_name`
does; an exact name wins over a wildcard, then the longest wildcard. A client
that sends no name or an unknown one (or does not speak TLS) goes to `pool`;
without `pool` it is closed. The ClientHello must arrive within
`Limits(client_header_timeout=)`.
"""

from txproxy.config import Limits, Pool, Proxy, Server, TCPListener

db = Pool("db", servers=[Server("10.0.0.5:5433"), Server("10.0.0.6:5433")])
web = Pool("web", servers=[Server("10.0.1.5:443"), Server("10.0.1.6:443")])
fallback = Pool("fallback", servers=[Server("10.0.2.5:443")])

proxy = Proxy(
    listeners=[
        TCPListener(
            "tcp:8443:interface=127.0.0.1",
            sni_routes={"db.example.com": db, "*.example.net": web},
            pool=fallback,
            limits=Limits(client_header_timeout=10.0),
        )
    ]
)
