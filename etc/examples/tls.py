"""
HTTPS in front of two demo origins: certificates chosen by SNI, HTTP/2 by
ALPN, HSTS, and plain HTTP redirected to HTTPS.

Make the certificates first (trustme is in the test extra; any CA works):

    pip install trustme
    python -m trustme -q -d etc/certs/site -i localhost 127.0.0.1
    python -m trustme -q -d etc/certs/net -i example.net '*.example.net'

then run it and try it:

    twistd -n txproxy --config etc/examples/tls.py
    curl --cacert etc/certs/site/client.pem https://localhost:8443/
    curl --cacert etc/certs/net/client.pem --http2 \\
        --resolve www.example.net:8443:127.0.0.1 https://www.example.net:8443/
    openssl s_client -connect 127.0.0.1:8443 -servername www.example.net -alpn h2 </dev/null
    curl -i http://127.0.0.1:8080/anything    # 301 to https://127.0.0.1:8443/anything
"""

import os

from txproxy.config import TLS, Certificate, HTTPListener, Pool, Proxy, Route, Server
from txproxy.demo import Origin

certs = os.path.join(os.path.dirname(__file__), "..", "certs")

web = Pool("web", servers=[Server("127.0.0.1:8081"), Server("127.0.0.1:8082")])

tls = TLS(
    certificates=[
        # The first certificate also serves clients that send no name or an unknown one.
        Certificate(
            cert=os.path.join(certs, "site", "server.pem"),
            key=os.path.join(certs, "site", "server.key"),
        ),
        Certificate(
            cert=os.path.join(certs, "net", "server.pem"),
            key=os.path.join(certs, "net", "server.key"),
        ),
    ],
    hsts=31536000,  # Strict-Transport-Security: max-age=31536000 on every response
    # The defaults: TLS 1.2 and 1.3, Mozilla's "intermediate" ciphers.
    # min_version="TLSv1.3", ciphers="ECDHE+AESGCM",
)

proxy = Proxy(
    listeners=[
        HTTPListener("tcp:8443:interface=127.0.0.1", routes=[Route(web)], tls=tls),
        # Plain HTTP only sends clients to HTTPS (301; 308 for methods other than GET and HEAD).
        HTTPListener("tcp:8080:interface=127.0.0.1", http_to_https=8443),
    ],
    services=[Origin("127.0.0.1:8081", "a"), Origin("127.0.0.1:8082", "b")],
)
