"""Layer 5: zeep clients built from the authored WSDLs, loaded offline.

:class:`UplinkClient` (sync) and :class:`AsyncUplinkClient` call the uplink
configuration service (CFG-2 … CFG-5) and return the library's plain objects
(:class:`~.uplinkconfig.UplinkConfiguration`, :class:`~.uplinkconfig.UplinkCapabilities`).
A SOAP fault becomes :class:`~.soap.fault.SoapFault` whose ``code`` and
``subcodes`` are readable as data; transport failures become
:class:`~.errors.TransportError`.

Authentication (SEC-2): WS-Security UsernameToken with PasswordDigest. The
``Created`` time is the local clock corrected by ``time_offset`` (device time
minus local time), so a client can talk to a device whose clock is off.

Any zeep transport can be passed in — the uplink issue's transport calls a
device through its uplink with the same client code (GEN-2). The default one
bounds each exchange as a whole (:mod:`.bounded_http`): ``timeout`` seconds
for the whole answer, head included, and at most :data:`MAX_ANSWER` bytes, so
a server that trickles or floods its answer is a one-line
:class:`~.errors.TransportError`, never a hang or a full memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import zeep
import zeep.exceptions
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport, Transport
from zeep.wsse.username import UsernameToken

from .bounded_http import AsyncBoundedTransport, BoundedTransport
from .errors import TransportError
from .namespaces import TUP
from .schemas import wsdl_path
from .soap.fault import SoapFault
from .uplinkconfig import UplinkCapabilities, UplinkConfiguration, split_levels

T = TypeVar("T")

#: Parser settings: no DTD, no entities, nothing fetched from the network.
SETTINGS = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True,
                         xml_huge_tree=False)
#: The largest answer the library's clients take from a server (their default transports).
MAX_ANSWER = 4 * 1024 * 1024


class OffsetUsernameToken(UsernameToken):
    """UsernameToken digest whose Created is ``now + time_offset`` and whose nonce is fresh per call."""

    def __init__(self, username: str, password: str, time_offset: timedelta = timedelta(0)) -> None:
        super().__init__(username, password, use_digest=True, zulu_timestamp=True)  # type: ignore[no-untyped-call]
        self.time_offset = time_offset
        self._lock = threading.Lock()

    def apply(self, envelope: Any, headers: Any) -> Any:
        with self._lock:
            self.created = datetime.now(UTC).replace(tzinfo=None, microsecond=0) + self.time_offset
            self.nonce = None
            return super().apply(envelope, headers)  # type: ignore[no-untyped-call]


def fault_from_zeep(exc: zeep.exceptions.Fault) -> SoapFault:
    """Turn zeep's fault into ours, keeping the subcode chain as local names."""
    code = "Receiver" if exc.code and str(exc.code).endswith("Receiver") else "Sender"
    subcodes = tuple(getattr(q, "localname", str(q).rsplit("}", 1)[-1].split(":")[-1]) for q in exc.subcodes or ())
    return SoapFault(code=code, subcodes=subcodes, reason=str(exc.message or ""), detail=None)


@contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """zeep's faults and transport failures as the library's exceptions."""
    try:
        yield
    except zeep.exceptions.Fault as exc:
        raise fault_from_zeep(exc) from None
    except zeep.exceptions.TransportError as exc:
        raise TransportError(f"{what}: HTTP {exc.status_code}: {exc.message}") from None
    except OSError as exc:
        raise TransportError(f"{what}: {exc}") from None


def _call(fn: Callable[[], T], what: str) -> T:
    with mapped_errors(what):
        return fn()


def _capabilities(obj: Any) -> UplinkCapabilities:
    return UplinkCapabilities(
        max_uplinks=int(obj.MaxUplinks or 0),
        protocols=tuple(obj.Protocols or ()),
        authorization_modes=tuple(obj.AuthorizationModes or ()),
        streaming_over_uplink=bool(obj.StreamingOverUplink),
    )


def _configuration(obj: Any) -> UplinkConfiguration:
    return UplinkConfiguration(
        remote_address=str(obj.RemoteAddress), user_level=split_levels(obj.UserLevel),
        certificate_id=obj.CertificateID, cert_path_validation_policy_id=obj.CertPathValidationPolicyID,
        authorization_server=obj.AuthorizationServer, status=obj.Status or "Offline", error=obj.Error)


def _configuration_arg(cfg: UplinkConfiguration) -> dict[str, Any]:
    arg: dict[str, Any] = {"RemoteAddress": cfg.remote_address, "UserLevel": list(cfg.user_level)}
    for key, value in (("CertificateID", cfg.certificate_id),
                       ("CertPathValidationPolicyID", cfg.cert_path_validation_policy_id),
                       ("AuthorizationServer", cfg.authorization_server)):
        if value is not None:
            arg[key] = value
    return arg


def username_token(username: str | None, password: str | None,
                   time_offset: timedelta) -> OffsetUsernameToken | None:
    """The WS-Security plugin for zeep, or None without a user name (SEC-2)."""
    if username is None:
        return None
    return OffsetUsernameToken(username, password or "", time_offset)


class UplinkClient:
    """Synchronous client of the uplink configuration service."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 time_offset: timedelta = timedelta(0), transport: Transport | None = None,
                 timeout: float = 10.0) -> None:
        self.url = url
        self.zeep = zeep.Client(str(wsdl_path("uplink")), settings=SETTINGS,
                                transport=transport or BoundedTransport(timeout, max_bytes=MAX_ANSWER),
                                wsse=username_token(username, password, time_offset))
        self.service = self.zeep.create_service(f"{{{TUP}}}UplinkBinding", url)

    def get_service_capabilities(self) -> UplinkCapabilities:
        return _capabilities(_call(self.service.GetServiceCapabilities, self.url))

    def get_uplinks(self) -> list[UplinkConfiguration]:
        return [_configuration(c) for c in _call(self.service.GetUplinks, self.url) or ()]

    def set_uplink(self, cfg: UplinkConfiguration) -> None:
        _call(lambda: self.service.SetUplink(Configuration=_configuration_arg(cfg)), self.url)

    def delete_uplink(self, remote_address: str) -> None:
        _call(lambda: self.service.DeleteUplink(RemoteAddress=remote_address), self.url)


class AsyncUplinkClient:
    """asyncio client of the uplink configuration service (zeep AsyncClient)."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 time_offset: timedelta = timedelta(0), transport: AsyncTransport | None = None,
                 timeout: float = 10.0) -> None:
        self.url = url
        self.zeep = zeep.AsyncClient(str(wsdl_path("uplink")), settings=SETTINGS,
                                     transport=transport or AsyncBoundedTransport(timeout, max_bytes=MAX_ANSWER),
                                     wsse=username_token(username, password, time_offset))
        binding = self.zeep.wsdl.bindings[f"{{{TUP}}}UplinkBinding"]
        self.service = AsyncServiceProxy(self.zeep, binding, address=url)

    async def _call(self, coro_fn: Callable[[], Any]) -> Any:
        with mapped_errors(self.url):
            return await coro_fn()

    async def get_service_capabilities(self) -> UplinkCapabilities:
        return _capabilities(await self._call(self.service.GetServiceCapabilities))

    async def get_uplinks(self) -> list[UplinkConfiguration]:
        return [_configuration(c) for c in await self._call(self.service.GetUplinks) or ()]

    async def set_uplink(self, cfg: UplinkConfiguration) -> None:
        await self._call(lambda: self.service.SetUplink(Configuration=_configuration_arg(cfg)))

    async def delete_uplink(self, remote_address: str) -> None:
        await self._call(lambda: self.service.DeleteUplink(RemoteAddress=remote_address))

    async def aclose(self) -> None:
        await self.zeep.transport.aclose()
