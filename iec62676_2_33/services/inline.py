"""Layer 5: which SOAP requests the device runs on its event loop (issue 8: the service edge).

The runtime's WSGI adapter (:mod:`..runtime.wsgi_handler`) asks the device
application, on the event loop, about each request whose body is already
complete and small; :func:`runs_inline` answers True only for the operations in
:data:`INLINE_OPERATIONS` -- ones that read memory or do a short read of the
store, never wait (PullMessages, Subscribe and their notifications), never
write SQLite, never call the network. Those then run right on the loop with no
thread hand-over (measured in ``bench/bench_edge.py``, docs/benchmarks.md
"Service edge"); everything else goes to the worker pool as before. The
device application asks only while its media backend is the store's own
(SQLite reads): a firmware backend may block, and these operations consult it.

One parse
---------
The operation is identified by parsing the body with the very function access
control uses, :func:`~..soap.envelope.parse_request`, and the parse is left in
``environ["iec62676.parsed"]`` (:data:`~..security.middleware.ENVIRON_PARSED`)
whichever way the answer goes: the access-control middleware takes it from
there instead of reading the bytes again, so access control, dispatch and this
scheduling decision all see the same tree. The decision never rests on the
request's own claims (SOAPAction, ``action`` parameter, WS-Addressing): a
client cannot get PullMessages run on the loop by naming another operation.
A body the parser refuses (or shorter than its ``Content-Length``) is put
back for the middleware, which reads it again and answers the fault. A request
without ``Content-Length`` or with a larger one is not looked at.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from typing import Any, Final

from ..namespaces import TDS, TEV, TUP
from ..security.middleware import ENVIRON_PARSED
from ..soap.envelope import parse_request
from ..soap.fault import SoapFault
from .media2 import TR2
from .security import TAS

__all__ = ["INLINE_MAX_BODY", "INLINE_OPERATIONS", "runs_inline"]

#: Quick, read-only operations: ``(namespace, local name)``.
INLINE_OPERATIONS: Final = frozenset({
    (TDS, "GetServices"), (TDS, "GetServiceCapabilities"), (TDS, "GetCapabilities"),
    (TDS, "GetSystemDateAndTime"), (TDS, "GetDeviceInformation"), (TDS, "GetScopes"),
    (TUP, "GetServiceCapabilities"), (TUP, "GetUplinks"),
    (TEV, "GetServiceCapabilities"), (TEV, "GetEventProperties"),
    (TR2, "GetServiceCapabilities"), (TR2, "GetProfiles"), (TR2, "GetStreamUri"), (TR2, "GetSnapshotUri"),
    (TAS, "GetServiceCapabilities"),
})
#: The largest body parsed here (the runtime asks only about complete bodies up to 16 KiB).
INLINE_MAX_BODY: Final = 16 * 1024


def runs_inline(environ: dict[str, Any], soap_paths: Collection[str]) -> bool:
    """True when the request is a POST to one of ``soap_paths`` with a declared length of at most
    :data:`INLINE_MAX_BODY` whose operation is in :data:`INLINE_OPERATIONS`; leaves the parse for
    the middleware (see the module docstring)."""
    declared = str(environ.get("CONTENT_LENGTH") or "")
    if (environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") not in soap_paths
            or not declared.isdigit() or int(declared) > INLINE_MAX_BODY):
        return False
    length, stream, parts = int(declared), environ["wsgi.input"], []
    while length > 0 and (chunk := stream.read(length)):
        parts.append(chunk)
        length -= len(chunk)
    body = b"".join(parts)
    try:
        if length:
            raise SoapFault(code="Sender", reason="short body")  # the middleware answers it (400)
        request = parse_request(environ.get("CONTENT_TYPE"), body)
    except SoapFault:
        environ["wsgi.input"] = io.BytesIO(body)
        return False
    environ[ENVIRON_PARSED] = request
    return request.operation_name in INLINE_OPERATIONS
