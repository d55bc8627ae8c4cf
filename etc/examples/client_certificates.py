"""
Mutual TLS: only clients with a certificate from your authority get through,
and the servers learn who they are from two headers.

Make a server certificate, and a client authority with one client
certificate (trustme's CA signs both here; in production the client
authority is your own):

    python -m trustme -q -d etc/certs/site -i localhost 127.0.0.1
    python - <<'PY'
    import trustme
    ca = trustme.CA()
    ca.cert_pem.write_to_path("etc/certs/clients-ca.pem")
    ca.issue_cert("alice@example.com", common_name="alice").private_key_and_cert_chain_pem \\
        .write_to_path("etc/certs/alice.pem")
    PY

    twistd -n txproxy --config etc/examples/client_certificates.py
    curl --cacert etc/certs/site/client.pem --cert etc/certs/alice.pem https://localhost:8443/
    curl --cacert etc/certs/site/client.pem https://localhost:8443/   # refused in the handshake

The servers get C{X-Client-Cert-Subject} (RFC 4514, e.g. C{CN=alice,...}) and
C{X-Client-Cert-Fingerprint} (SHA-256, hex); the same fields sent by a client
are always removed first, so a server can trust them.
"""

import os

from txproxy.config import TLS, Certificate, HTTPListener, Pool, Proxy, Route, Server
from txproxy.demo import Origin

certs = os.path.join(os.path.dirname(__file__), "..", "certs")

web = Pool("web", servers=[Server("127.0.0.1:8081")])

tls = TLS(
    certificates=[
        Certificate(
            cert=os.path.join(certs, "site", "server.pem"),
            key=os.path.join(certs, "site", "server.key"),
        )
    ],
    client_ca=os.path.join(certs, "clients-ca.pem"),
    verify_client="required",  # or "optional": no certificate is let in, a bad one is not
)

proxy = Proxy(
    listeners=[HTTPListener("tcp:8443:interface=127.0.0.1", routes=[Route(web)], tls=tls)],
    services=[Origin("127.0.0.1:8081", "a")],
)
