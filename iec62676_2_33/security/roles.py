"""User roles (PROV-4, SEC-1, SEC-4): what a role is, which may be stored, and what a set of roles grants.

Layer 5 (services): the rules; the rows live in the device store (any object
with the :class:`RoleStore` methods), the wire in the device service
(GetUserRoles, SetUserRole, DeleteUserRole).

Theory of operation
-------------------
ONVIF Core (Security › User roles; the 25.12 addition) lets a device that
reports ``MaxUserRoles > 0`` define *roles*: a name and the list of functions
(operations, written ``prefix:Operation`` such as ``tas:GetAllCertificates``)
a holder may call. Three roles are predefined and fixed —
``onvif:Administrator``, ``onvif:Operator``, ``onvif:User`` — each
functionally equivalent to its user level (they are resolved in
:func:`~.access.is_allowed`, so every path that checks a level honours them);
``MaxUserRoles`` counts them. Custom role names carry no ``onvif:`` prefix and
no white space, and name only functions the device implements.

A request's *names* are its user levels plus roles: a device user's level and
the roles assigned to that user (Core: ``tt:UserExtension/Roles``), or the
``UserLevel`` list of the uplink it came through (Uplink: "UserLevel may
contain a list of acceptable user roles"). :meth:`RoleBook.authorize` allows
an operation when the levels (predefined roles included) allow its access
class, or when a custom role among the names lists the operation. The store is
read only when the levels alone refuse, so requests that levels allow cost
nothing extra.

Faults are the ones Core lists: ``InvalidArgVal/InvalidUserRole`` (no such
role; also for a custom name that could not be written in a
``tt:StringList``, or that is a user level's name), ``OperationProhibited/OnvifPrefix``,
``Action/TooManyUserRoles``, ``Action/FunctionNotImplemented``.

No one hands out more rights than it holds: a SetUserRole whose functions,
or a SetUplink whose UserLevel, would allow a function the caller may not
call itself is ``Sender/NotAuthorized`` (:meth:`RoleBook.beyond`), so a custom
role that lists ``tup:SetUplink`` or ``tds:SetUserRole`` does not make its
holders Administrators.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ConfigurationError
from ..namespaces import TDS, TEV, TUP
from ..soap.fault import not_authorized
from .access import PREDEFINED_ROLES, AccessClass, UserLevel, is_allowed
from .middleware import ENVIRON_LEVELS, ENVIRON_USER

__all__ = [
    "FUNCTION_PREFIXES",
    "MAX_USER_ROLES",
    "ONVIF_PREFIX",
    "RoleBook",
    "RoleStore",
    "UserRole",
    "UserRoleError",
    "function_name",
    "refuse_beyond",
]

ONVIF_PREFIX = "onvif:"
#: MaxUserRoles: the roles a device holds, the three predefined ones included.
MAX_USER_ROLES = 16
MAX_FUNCTIONS = 256
MAX_NAME = 64

#: The conventional prefixes of the services' namespaces, as role functions are written.
FUNCTION_PREFIXES: Mapping[str, str] = {
    TDS: "tds",
    TUP: "tup",
    TEV: "tev",
    "http://www.onvif.org/ver10/advancedsecurity/wsdl": "tas",
    "http://www.onvif.org/ver20/media/wsdl": "tr2",
    "http://www.onvif.org/ver20/ptz/wsdl": "tptz",
}


@dataclass(frozen=True)
class UserRole:
    """``tt:UserRole``: a name and the functions it permits (empty for the predefined roles)."""

    name: str
    functions: tuple[str, ...] = ()


class UserRoleError(ConfigurationError):
    """A role request was refused; ``code``/``subcodes`` name the SOAP 1.2 fault."""

    def __init__(self, message: str, *subcodes: str, code: str = "Sender") -> None:
        super().__init__(message)
        self.code = code
        self.subcodes: tuple[str, ...] = subcodes


class RoleStore(Protocol):
    """Where custom roles and users' roles are kept (:class:`~iec62676_2_33.store.DeviceStore`)."""

    def list_user_roles(self) -> list[tuple[str, tuple[str, ...]]]: ...
    def put_user_role(self, name: str, functions: Sequence[str], *, max_custom: int) -> None: ...
    def delete_user_role(self, name: str) -> bool: ...
    def roles_of_user(self, user: str) -> tuple[str, ...]: ...


def function_name(namespace: str, operation: str) -> str | None:
    """``prefix:Operation`` of an operation, or None for a namespace without a conventional prefix."""
    prefix = FUNCTION_PREFIXES.get(namespace)
    return None if prefix is None else f"{prefix}:{operation}"


def _unknown(name: str) -> UserRoleError:
    return UserRoleError(f"no user role {name[:MAX_NAME]!r} exists on this device", "InvalidArgVal", "InvalidUserRole")


class RoleBook:
    """The roles of one device: rules here, rows in ``store``.

    ``implemented`` (and :meth:`implement`) give every ``(namespace, operation)``
    the device serves; a custom role may name only those (as ``prefix:Operation``).
    """

    def __init__(self, store: RoleStore, implemented: Mapping[tuple[str, str], AccessClass] | None = None, *,
                 max_roles: int = MAX_USER_ROLES) -> None:
        self.store = store
        self.max_roles = max_roles
        #: every function the device serves (``prefix:Operation``) and its access class
        self.classes: dict[str, AccessClass] = {}
        self.implement(implemented or {})

    @property
    def implemented(self) -> set[str]:
        """The functions a custom role may name."""
        return set(self.classes)

    def implement(self, operations: Mapping[tuple[str, str], AccessClass]) -> None:
        """Operations the device serves (``(namespace, name)`` → access class): roles may name them from now on."""
        for (namespace, operation), access_class in operations.items():
            name = function_name(namespace, operation)
            if name is not None:
                self.classes[name] = access_class

    def functions_of(self, names: Sequence[str], user: str | None = None) -> set[str]:
        """The functions ``names`` (levels and roles, plus ``user``'s roles) may call: :meth:`authorize`'s answer
        for every function the device serves, with the store read once."""
        held = [*names, *(self.store.roles_of_user(user) if user is not None else ())]
        custom = self._custom()
        granted = {f for n in held if n in custom for f in custom[n].functions}
        return granted | {f for f, access_class in self.classes.items() if is_allowed(held, access_class)}

    def beyond(self, names: Sequence[str], user: str | None, granted: Iterable[str]) -> list[str]:
        """Of the functions ``granted`` would confer, those the caller (``names``, ``user``) may not call itself,
        sorted: what a caller may not hand out, to an uplink's UserLevel or a role (no one grants more rights
        than it holds; a role allowed SetUplink or SetUserRole is no Administrator)."""
        return sorted(set(granted) - self.functions_of(names, user))

    def _custom(self) -> dict[str, UserRole]:
        return {name: UserRole(name, functions) for name, functions in self.store.list_user_roles()}

    def roles(self, name: str | None = None) -> list[UserRole]:
        """GetUserRoles: every role (predefined first), or the one named."""
        every = [UserRole(n) for n in PREDEFINED_ROLES] + sorted(self._custom().values(), key=lambda r: r.name)
        if name is None:
            return every
        found = [r for r in every if r.name == name]
        if not found:
            raise _unknown(name)
        return found

    def set(self, role: UserRole) -> None:
        """SetUserRole: create or overwrite a custom role (Core's faults for what cannot be)."""
        name = role.name
        if name.startswith(ONVIF_PREFIX):
            raise UserRoleError(f"roles starting with {ONVIF_PREFIX!r} are predefined and cannot be set",
                                "OperationProhibited", "OnvifPrefix")
        levels = {level.value for level in UserLevel}
        if not name or len(name) > MAX_NAME or any(ch.isspace() for ch in name) or name in levels:
            raise UserRoleError(f"a role name has 1 to {MAX_NAME} characters, no white space, and is not a user "
                                f"level's name; {name[:MAX_NAME]!r} is not usable", "InvalidArgVal", "InvalidUserRole")
        functions = tuple(dict.fromkeys(role.functions))
        missing = [f for f in functions if f not in self.implemented]
        if missing or len(functions) > MAX_FUNCTIONS:
            shown = " ".join(f[:60] for f in missing[:5]) or f"more than {MAX_FUNCTIONS} functions"
            raise UserRoleError(f"not implemented by this device: {shown}", "Action", "FunctionNotImplemented",
                                code="Receiver")
        try:
            self.store.put_user_role(name, functions, max_custom=self.max_roles - len(PREDEFINED_ROLES))
        except ConfigurationError as exc:  # the store's capacity check
            raise UserRoleError(f"{exc} (MaxUserRoles {self.max_roles}, the predefined roles included)",
                                "Action", "TooManyUserRoles", code="Receiver") from None

    def delete(self, name: str) -> None:
        """DeleteUserRole."""
        if name.startswith(ONVIF_PREFIX):
            raise UserRoleError(f"roles starting with {ONVIF_PREFIX!r} are predefined and cannot be deleted",
                                "OperationProhibited", "OnvifPrefix")
        if not self.store.delete_user_role(name):
            raise _unknown(name)

    def authorize(self, names: Sequence[str], user: str | None, access_class: AccessClass,
                  operation: tuple[str, str]) -> bool:
        """True when ``names`` (levels and roles, plus ``user``'s roles) allow ``operation`` (see the module)."""
        if is_allowed(names, access_class):
            return True
        held = [*names, *(self.store.roles_of_user(user) if user is not None else ())]
        if user is not None and is_allowed(held, access_class):
            return True
        wanted = function_name(*operation)
        if wanted is None:
            return False
        custom = self._custom()
        return any(wanted in custom[n].functions for n in held if n in custom)



def refuse_beyond(book: RoleBook, environ: Mapping[str, Any], granted: Iterable[str], what: str) -> None:
    """SetUserRole's and SetUplink's check (module docstring): ``Sender/NotAuthorized`` when ``granted`` holds a
    function the request's caller (its levels and user, as the access-control middleware set them in
    ``environ``) may not call itself."""
    extra = book.beyond(environ.get(ENVIRON_LEVELS) or [], environ.get(ENVIRON_USER), granted)
    if extra:
        shown = " ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise not_authorized(f"{what} would allow {shown}, which this account may not call itself")
