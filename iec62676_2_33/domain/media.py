"""Layer 6 (domain): the device's media sources — what its Media2 profiles stream (STR-1, ANX-B-1).

A device (camera or VMS) already runs an RTSP server; this library relays to
it. A :class:`MediaSource` names one stream of that server: its Media2
profile token, a display name, the camera-side ``rtsp://`` URL (credentials
kept apart, never in the URL, never logged), an optional snapshot URL and the
video encoder facts a client lists (encoding, resolution).

Where sources come from is pluggable: :class:`MediaBackend` is the interface
the Media2 service and the RTSP relay read; :class:`StoreMediaBackend` serves
the sources configured with ``iec62676 device media add`` (kept in
:class:`~..store.DeviceStore`), and firmware may plug in its own backend
instead. :func:`validate_media_source` is the one validation the CLI, the
store and any API caller share; it raises :class:`~..errors.ConfigurationError`
saying which field is wrong. :class:`ReplayRelayBackend` adds the replay RTSP
server to what the uplinks' relay reaches, under the reserved token
:data:`REPLAY_TOKEN` (ANX-B-3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .tokens import validate_reference_token

if TYPE_CHECKING:
    from ..store import DeviceStore

__all__ = [
    "ENCODINGS",
    "REPLAY_TOKEN",
    "MediaBackend",
    "MediaSource",
    "ReplayRelayBackend",
    "StoreMediaBackend",
    "validate_media_source",
]

#: Video encodings a Media2 VideoEncoderConfiguration names (tt:VideoEncodingMimeNames).
ENCODINGS = ("H264", "H265", "JPEG", "MPV4-ES")
#: Largest width/height accepted (an 8K frame is 7680 x 4320; 16384 leaves room, stops typos).
MAX_DIMENSION = 16384
#: tt:Name is at most 64 characters (ONVIF schema).
MAX_NAME = 64
#: The media token under which the uplinks' RTSP relay reaches the replay server (ANX-B-3, see
#: :class:`ReplayRelayBackend`); no media source may take it.
REPLAY_TOKEN = "replay"


@dataclass(frozen=True, kw_only=True)
class MediaSource:
    """One stream of the camera-side RTSP server, exposed as a fixed Media2 profile."""

    token: str  # tt:ReferenceToken (<= 64 chars), the Media2 profile token
    name: str
    rtsp_url: str  # the camera-side RTSP server, rtsp://host:port/path (no user info)
    snapshot_url: str | None = None
    encoding: str = "H264"
    width: int | None = None
    height: int | None = None
    username: str | None = None  # camera-side RTSP credentials, never logged
    password: str | None = field(default=None, repr=False)


class MediaBackend(Protocol):
    """What firmware plugs in instead of the store: the device's media sources."""

    def media_sources(self) -> list[MediaSource]: ...

    def media_source(self, token: str) -> MediaSource | None: ...


class StoreMediaBackend:
    """The media sources configured in the device store (``iec62676 device media add``)."""

    def __init__(self, store: DeviceStore) -> None:
        self._store = store

    def media_sources(self) -> list[MediaSource]:
        return self._store.list_media_sources()

    def media_source(self, token: str) -> MediaSource | None:
        return self._store.get_media_source(token)


def _printable(value: str, what: str) -> None:
    if any(not ch.isprintable() for ch in value):
        raise ConfigurationError(f"media source {what} contains a control character")


def _check_url(url: str, schemes: tuple[str, ...], what: str) -> None:
    _printable(url, what)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"media source {what} {url!r} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in schemes:
        raise ConfigurationError(
            f"media source {what} {url!r} must be a {' or '.join(s + '://' for s in schemes)} URL")
    if not parts.hostname:
        raise ConfigurationError(f"media source {what} {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f"media source {what} must not carry user info; give the camera's credentials with "
            "--rtsp-user / --rtsp-password-file (username/password fields)")
    if parts.fragment:
        raise ConfigurationError(f"media source {what} {url!r} must not have a fragment")
    if port == 0:
        raise ConfigurationError(f"media source {what} {url!r} has port 0")


def _check_dimension(value: int | None, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
        raise ConfigurationError(f"media source {what} must be an integer 1..{MAX_DIMENSION}, not {value!r}")


def validate_media_source(src: MediaSource) -> MediaSource:
    """Check every field of *src* and return it unchanged; raise ConfigurationError naming the bad field."""
    try:
        validate_reference_token(src.token)
    except ConfigurationError as exc:
        raise ConfigurationError(f"media source token: {exc}") from None
    if any(ch.isspace() or not ch.isprintable() for ch in src.token):
        raise ConfigurationError(f"media source token {src.token!r} must not contain whitespace or "
                                 "control characters (it becomes a path segment of stream URIs)")
    if "/" in src.token:
        raise ConfigurationError(f"media source token {src.token!r} must not contain '/' "
                                 "(it becomes a path segment of stream URIs)")
    if src.token == REPLAY_TOKEN:
        raise ConfigurationError(f"media source token {REPLAY_TOKEN!r} is reserved (replay through the cloud)")
    if not src.name.strip():
        raise ConfigurationError("media source name is empty")
    _printable(src.name, "name")
    if len(src.name) > MAX_NAME:
        raise ConfigurationError(f"media source name is longer than {MAX_NAME} characters (tt:Name)")
    _check_url(src.rtsp_url, ("rtsp",), "RTSP URL")
    if src.snapshot_url is not None:
        _check_url(src.snapshot_url, ("http", "https"), "snapshot URL")
    if src.encoding not in ENCODINGS:
        raise ConfigurationError(f"media source encoding {src.encoding!r} is not one of {', '.join(ENCODINGS)}")
    _check_dimension(src.width, "width")
    _check_dimension(src.height, "height")
    if (src.width is None) != (src.height is None):
        raise ConfigurationError("media source width and height go together: give both or neither")
    if src.username is not None:
        _printable(src.username, "username")
        if not src.username or ":" in src.username:
            raise ConfigurationError("media source username must be non-empty and contain no ':' "
                                     "(RTSP Basic/Digest credentials)")
    if src.password is not None:
        if src.username is None:
            raise ConfigurationError("media source password needs a username")
        _printable(src.password, "password")
    return src


@dataclass(frozen=True)
class ReplayRelayBackend:
    """What the uplinks' RTSP relay reaches: the media sources of ``live`` and, under :data:`REPLAY_TOKEN`,
    the replay RTSP server whose mounts start with ``replay_base`` (``rtsp://host:port/replay``).

    The relay maps a player's URL ``…/<token>/<rest>`` to ``<source URL>/<rest>``, so the replay URI a
    request through the cloud gets, ``<RTSP front>/devices/<id>/replay/<recording token>``, reaches
    ``<replay_base>/<recording token>`` over the uplink like a live stream (ANX-B-3). Only
    :meth:`media_source` knows the replay server: it is no Media2 profile.
    """

    live: MediaBackend
    replay_base: str

    def media_sources(self) -> list[MediaSource]:
        return self.live.media_sources()

    def media_source(self, token: str) -> MediaSource | None:
        if token == REPLAY_TOKEN:
            return MediaSource(token=REPLAY_TOKEN, name="Replay", rtsp_url=self.replay_base)
        return self.live.media_source(token)
