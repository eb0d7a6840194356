"""``iec62676 device …``: the device side — users, keystore, policies, uplinks, serve.

Every change goes through the same validation as the SOAP operations
(CFG-3, CFG-4) and lands in the durable store (CFG-6); a running
``device serve`` picks it up.

A running ``device serve`` keeps ``<data>/serve.json`` (mode 0600) up to date:
its process ID, the URL of its direct services and each uplink's live Status
and Error. ``uplink list`` reads it, so it shows what the running device sees,
and says so on stderr when no device is running. One ``device serve`` per data
folder: it holds ``<data>/serve.lock`` (:func:`fcntl.flock`, released when the
process ends however it ends), and a second one is refused with one line
instead of dialling the same uplinks with the same identity.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from ..api import Device, has_device_store, serve_device
from ..errors import ConfigurationError
from ..pki import check_key_matches, load_certs_pem, load_key_pem
from ..security.access import UserLevel, parse_level
from ..security.oauth import token_endpoint
from ..services.uplink import UplinkServiceContext
from ..store import AuthServerConfig, DeviceStore
from ..uplinkconfig import UplinkConfiguration, split_levels
from .media import register_media_group
from .options import CLIENT_SECRET_ENV, PASSWORD_ENV, add_data, add_secret, host_port, read_secret
from .resources import register_device_group

LEVELS = [lvl.value for lvl in UserLevel if lvl is not UserLevel.ANONYMOUS]


#: The running device's state file in its data folder (see the module docstring).
SERVE_STATE = "serve.json"
#: The file a running ``device serve`` holds locked (see the module docstring).
SERVE_LOCK = "serve.lock"
#: How often ``device serve`` refreshes it; older than STALE_AFTER seconds, it is not believed.
STATE_INTERVAL = 1.0
STALE_AFTER = 10.0


def _data(p: argparse.ArgumentParser, *, creates: bool = False) -> None:
    add_data(p, creates=creates)


def _group(sub: Any, name: str, help_: str) -> Any:
    parser = sub.add_parser(name, help=help_)
    return parser.add_subparsers(dest=f"{name}_command", required=True, parser_class=type(parser))


def register(sub: Any) -> None:
    device = sub.add_parser("device", help="device side: store, uplinks, serve")
    dsub = device.add_subparsers(dest="device_command", required=True, parser_class=type(device))

    users = _group(dsub, "user", "users for direct access (WS-Security / HTTP Digest)")
    p = users.add_parser("add", help="add or replace a user")
    _data(p, creates=True)
    p.add_argument("--name", required=True)
    add_secret(p, "password", PASSWORD_ENV, help_="the user's password")
    p.add_argument("--level", required=True, choices=LEVELS)
    p.add_argument("--role", action="append", metavar="ROLE",
                   help="a user role the user also holds (repeatable; onvif:… or one set with SetUserRole)")
    p.set_defaults(handler=user_add)
    p = users.add_parser("list", help="list users and levels")
    _data(p)
    p.set_defaults(handler=user_list)
    p = users.add_parser("remove", help="remove a user")
    _data(p)
    p.add_argument("--name", required=True)
    p.set_defaults(handler=user_remove)

    keystore = _group(dsub, "keystore", "client certificates with their keys (CertificateID)")
    p = keystore.add_parser("add", help="store a certificate and its private key under an ID")
    _data(p, creates=True)
    p.add_argument("--id", required=True)
    p.add_argument("--cert", required=True, type=Path, metavar="CERT.pem")
    p.add_argument("--key", required=True, type=Path, metavar="KEY.pem")
    p.set_defaults(handler=keystore_add)
    p = keystore.add_parser("list", help="list stored CertificateIDs")
    _data(p)
    p.set_defaults(handler=keystore_list)

    policy = _group(dsub, "policy", "certification path validation policies (trust anchors)")
    p = policy.add_parser("add", help="store trust anchors under a CertPathValidationPolicyID")
    _data(p, creates=True)
    p.add_argument("--id", required=True)
    p.add_argument("--trust", required=True, action="append", type=Path, metavar="CA.pem")
    p.set_defaults(handler=policy_add)
    p = policy.add_parser("list", help="list stored policy IDs")
    _data(p)
    p.set_defaults(handler=policy_list)

    authserver = _group(dsub, "authserver", "authorization server configurations (access tokens, UPL-14)")
    p = authserver.add_parser("add", help="store an OAuth2 client-credentials configuration under a token")
    _data(p, creates=True)
    p.add_argument("--token", required=True, help="the configuration's token (AuthorizationServer of an uplink)")
    p.add_argument("--url", required=True, metavar="URL", help="the token endpoint, https://…/token")
    p.add_argument("--client-id", required=True)
    add_secret(p, "client-secret", CLIENT_SECRET_ENV, help_="the OAuth2 client secret")
    p.add_argument("--policy-id", help="CertPathValidationPolicyID for the server's certificate "
                   "(default: the system trust store)")
    p.set_defaults(handler=authserver_add)
    p = authserver.add_parser("list", help="list stored authorization server configurations")
    _data(p)
    p.set_defaults(handler=authserver_list)

    uplink = _group(dsub, "uplink", "uplink configurations (same rules as SetUplink)")
    p = uplink.add_parser("set", help="add or replace the uplink keyed by --remote")
    _data(p, creates=True)
    p.add_argument("--remote", required=True, metavar="URI", help="RemoteAddress, e.g. https://cloud:8443/uplink")
    p.add_argument("--cert-id", help="CertificateID (mTLS)")
    p.add_argument("--policy-id", help="CertPathValidationPolicyID for the cloud's certificate")
    p.add_argument("--auth-server", help="AuthorizationServer token (access-token mode)")
    p.add_argument("--user-level", action="append", metavar="LEVEL",
                   help="UserLevel of tunnelled requests (repeatable; default Administrator)")
    p.set_defaults(handler=uplink_set)
    p = uplink.add_parser("list", help="list uplink configurations with the running device's live Status and Error")
    _data(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=uplink_list)
    p = uplink.add_parser("delete", help="delete the uplink keyed by --remote")
    _data(p)
    p.add_argument("--remote", required=True, metavar="URI")
    p.set_defaults(handler=uplink_delete)

    register_device_group(dsub)  # resources load / list / remove (cli/resources.py)
    register_media_group(dsub)  # media add / list / remove (cli/media.py)

    p = dsub.add_parser("serve", help="serve the device's web services (and run its uplinks)")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="the device's data folder")
    p.add_argument("--init", action="store_true", help="start an empty device when DIR holds none")
    p.add_argument("--listen", default="127.0.0.1:8080", type=host_port, metavar="HOST:PORT")
    p.add_argument("--replay-listen", default="127.0.0.1:0", type=host_port, metavar="HOST:PORT",
                   help="RTSP server replaying the recordings of 'iec62676 recordings' (port 0: a free one)")
    p.set_defaults(handler=serve, log_default=logging.INFO)


def _store(args: argparse.Namespace) -> DeviceStore:
    return DeviceStore(args.data)


def _context(store: DeviceStore) -> UplinkServiceContext:
    from ..runtime.device import device_capabilities

    return UplinkServiceContext(store=store, capabilities=device_capabilities())


def user_add(args: argparse.Namespace) -> int:
    roles = args.role or []
    password = read_secret(args, "password", PASSWORD_ENV) or ""  # before anything is created
    with _store(args) as store:
        unknown = [r for r in roles if not store.has_user_role(r)]
        if unknown:
            raise ConfigurationError(f"--role {unknown[0]!r} is not a user role of this device; create it with "
                                     "SetUserRole or use onvif:Administrator, onvif:Operator, onvif:User")
        store.put_user(args.name, password, parse_level(args.level), roles)
    print(f"user {args.name} ({args.level}{''.join(f', {r}' for r in roles)}) stored")
    return 0


def user_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        for name, level in store.list_users():
            roles = store.roles_of_user(name)
            print(f"{name}\t{level}" + (f"\troles={','.join(roles)}" if roles else ""))
    return 0


def user_remove(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if not store.delete_user(args.name):
            print(f"iec62676: error: no user named {args.name!r}", file=sys.stderr)
            return 2
    print(f"user {args.name} removed")
    return 0


def keystore_add(args: argparse.Namespace) -> int:
    certs = load_certs_pem(args.cert)
    key = load_key_pem(args.key)
    check_key_matches(certs[0], key, cert_name=str(args.cert), key_name=str(args.key))
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with _store(args) as store:
        store.put_certificate(args.id, chain, key_pem)
    print(f"certificate {args.id} stored ({len(certs)} certificate(s) in the chain)")
    return 0


def keystore_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        for cid in store.list_certificates():
            print(cid)
    return 0


def policy_add(args: argparse.Namespace) -> int:
    anchors = [c.public_bytes(serialization.Encoding.PEM) for path in args.trust for c in load_certs_pem(path)]
    with _store(args) as store:
        store.put_policy(args.id, anchors)
    print(f"policy {args.id} stored with {len(anchors)} trust anchor(s)")
    return 0


def policy_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        for pid in store.list_policies():
            print(pid)
    return 0


def authserver_add(args: argparse.Namespace) -> int:
    try:
        endpoint = token_endpoint(args.url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"--url: {exc}") from None
    secret = read_secret(args, "client-secret", CLIENT_SECRET_ENV) or ""
    with _store(args) as store:
        if args.policy_id is not None and not store.has_policy(args.policy_id):
            raise ConfigurationError(f"no certification path validation policy is stored under "
                                     f"{args.policy_id!r}; add it with 'device policy add'")
        store.put_auth_server(AuthServerConfig(token=args.token, url=args.url, client_id=args.client_id,
                                               client_secret=secret, policy_id=args.policy_id))
    print(f"authorization server {args.token} stored ({endpoint}, client {args.client_id})")
    return 0


def authserver_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        for token in store.list_auth_servers():
            cfg = store.get_auth_server(token)
            assert cfg is not None
            policy = f"\tpolicy={cfg.policy_id}" if cfg.policy_id else ""
            print(f"{cfg.token}\t{cfg.url}\tclient={cfg.client_id}{policy}")  # never the secret
    return 0


def uplink_set(args: argparse.Namespace) -> int:
    cfg = UplinkConfiguration(
        remote_address=args.remote, user_level=split_levels(args.user_level or ["Administrator"]),
        certificate_id=args.cert_id, cert_path_validation_policy_id=args.policy_id,
        authorization_server=args.auth_server)
    with _store(args) as store:
        stored = _context(store).set_uplink(cfg)
    print(f"uplink {stored.remote_address} stored")
    return 0


def _live_uplinks(data: Path) -> list[dict[str, Any]] | None:
    """The uplinks as the running device last wrote them, or ``None`` when no device runs on ``data``."""
    try:
        state = json.loads((data / SERVE_STATE).read_text(encoding="utf-8"))
        os.kill(int(state["pid"]), 0)
    except PermissionError:  # a process of another user: it exists
        pass
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if time.time() - float(state.get("written", 0)) > STALE_AFTER:
        return None
    uplinks: list[dict[str, Any]] = state["uplinks"]
    return uplinks


def uplink_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        uplinks = _context(store).uplinks()
    live = _live_uplinks(args.data)
    if live is None:
        print(f"iec62676: no device is running on {args.data}; Status is that of a stopped device",
              file=sys.stderr)
    else:
        now = {u["RemoteAddress"]: u for u in live}
        uplinks = [replace(u, status=now[u.remote_address]["Status"], error=now[u.remote_address]["Error"])
                   if u.remote_address in now else u for u in uplinks]
    if args.format == "json":
        print(json.dumps([{
            "RemoteAddress": u.remote_address, "CertificateID": u.certificate_id,
            "UserLevel": list(u.user_level), "Status": u.status,
            "CertPathValidationPolicyID": u.cert_path_validation_policy_id,
            "AuthorizationServer": u.authorization_server, "Error": u.error} for u in uplinks], indent=2))
        return 0
    for u in uplinks:
        auth = f"cert={u.certificate_id}" if u.certificate_id else f"auth-server={u.authorization_server}"
        policy = f" policy={u.cert_path_validation_policy_id}" if u.cert_path_validation_policy_id else ""
        error = f"\t{u.error}" if u.error else ""
        print(f"{u.remote_address}\t{auth}{policy}\tlevel={' '.join(u.user_level)}\t{u.status}{error}")
    return 0


def uplink_delete(args: argparse.Namespace) -> int:
    with _store(args) as store:
        _context(store).delete_uplink(args.remote)
    print(f"uplink {args.remote} deleted")
    return 0


def serve(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if not args.init and not has_device_store(args.data):
        raise ConfigurationError(f"--data {args.data} holds no device; give --init to start an empty one, "
                                 "or fix the path")
    lock = _lock_folder(args.data)
    try:
        async with serve_device(args.data, listen=args.listen, create=True,
                                replay_listen=args.replay_listen) as device:
            print(f"device serving {device.url}", flush=True)
            await _keep_state(device, stop)
    finally:
        os.close(lock)
    return 0


def _lock_folder(data: Path) -> int:
    """Lock ``data``'s SERVE_LOCK for this process (created with the folder when missing); the descriptor."""
    data.mkdir(parents=True, exist_ok=True)
    fd = os.open(data / SERVE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigurationError(f"a 'device serve' already runs on {data}: stop it first (one process per data "
                                 "folder)") from None
    return fd


async def _keep_state(device: Device, stop: asyncio.Event) -> None:
    """Write ``serve.json`` (see the module docstring) until ``stop``; remove it at the end."""
    path = device.data_dir / SERVE_STATE
    try:
        while not stop.is_set():
            uplinks = await asyncio.to_thread(device.uplinks)
            state = {"pid": os.getpid(), "url": device.url, "written": time.time(),
                     "uplinks": [{"RemoteAddress": u.remote_address, "Status": u.status, "Error": u.error}
                                 for u in uplinks]}
            temp = path.with_suffix(".tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(state, out)
            os.replace(temp, path)
            try:
                await asyncio.wait_for(stop.wait(), STATE_INTERVAL)
            except TimeoutError:
                pass
    finally:
        path.unlink(missing_ok=True)
