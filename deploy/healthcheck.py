"""The container image's HEALTHCHECK: GET /healthz of the broker in this container.

Exit 0 when it answers 200, else 1. The broker's certificate names the service, not
127.0.0.1, and this is a loopback call inside the container, so the certificate is not
checked. ``CUSTODES_HEALTHZ_URL`` overrides the URL (e.g. ``http://…`` without TLS).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

URL = os.environ.get("CUSTODES_HEALTHZ_URL", "https://127.0.0.1:8443/healthz")


def main() -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # loopback, same container: see the docstring
    try:
        with urllib.request.urlopen(URL, context=context, timeout=4) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as e:
        print(f"healthcheck: {URL}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
