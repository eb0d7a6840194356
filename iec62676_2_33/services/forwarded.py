"""Layer 5: the address a client used to reach this device, ``X-Forwarded-*`` honoured (GEN-2, GEN-3).

The cloud's HTTP proxy forwards ``/devices/<id>/…`` over the uplink and sets
``X-Forwarded-Proto``, ``-Host`` and ``-Prefix``; every address the device
hands out (GetServices XAddrs, subscription references) is built here so it
points back through the proxy. Values that are not well formed are ignored
rather than copied into an address (a malformed ``Host`` too: the server's
``SERVER_NAME``, which may come from it, is checked the same way, else
``localhost``); the first element of a list wins for
proto and host, prefixes of a proxy chain are joined in order.
"""

from __future__ import annotations

import re
from typing import Any

_PROTO = re.compile(r"^https?$", re.IGNORECASE)
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~%!$&'()*+,;=:@-]*)+$")


def _first(value: str | None) -> str | None:
    if not value:
        return None
    head = value.split(",", 1)[0].strip()
    return head or None


def _forwarded_prefix(value: str | None) -> str:
    if not value:
        return ""
    parts = [p.strip().rstrip("/") for p in value.split(",")]
    if not all(p == "" or _PREFIX.match(p) for p in parts):
        return ""
    return "".join(parts)


def request_base_url(environ: dict[str, Any]) -> str:
    """``scheme://host[:port][prefix]`` that the client used to reach us (see the module docstring)."""
    proto = _first(environ.get("HTTP_X_FORWARDED_PROTO"))
    scheme = proto.lower() if proto and _PROTO.match(proto) else str(environ.get("wsgi.url_scheme") or "http")
    host = _first(environ.get("HTTP_X_FORWARDED_HOST"))
    if not host or not _HOST.match(host):
        host = environ.get("HTTP_HOST")
        if not host or not _HOST.match(host):
            name = str(environ.get("SERVER_NAME") or "localhost")
            if ":" in name and not name.startswith("["):
                name = f"[{name}]"
            port = str(environ.get("SERVER_PORT") or "")
            default = "443" if scheme == "https" else "80"
            host = name if port in ("", default) else f"{name}:{port}"
            if not _HOST.match(host):  # SERVER_NAME comes from the same Host when it has a port: never copied
                host = "localhost" if port in ("", default) else f"localhost:{port}"
    prefix = _forwarded_prefix(environ.get("HTTP_X_FORWARDED_PREFIX"))
    script = str(environ.get("SCRIPT_NAME") or "").rstrip("/")
    return f"{scheme}://{host}{prefix}{script}"
