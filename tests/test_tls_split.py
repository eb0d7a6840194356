"""Infrastructure: the TLS transport split by job keeps one definition per name and one engine interface.

``transport/tls.py`` is the public face (re-exports only), ``tls_engine.py`` the engine and its stream,
``tls_server.py`` the server; the server reaches its engines only through their public members (the
:class:`~iec62676_2_33.transport.tls_engine.TlsAcceptor` contract), never through ``_``-attributes.
"""

from __future__ import annotations

import ast
import inspect

from iec62676_2_33.transport import tls, tls_engine, tls_server


def test_the_public_face_only_re_exports() -> None:
    """Infrastructure: every name of ``tls.__all__`` is the engine's or the server's object; tls.py defines none."""
    tree = ast.parse(inspect.getsource(tls))
    defined = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert defined == []
    for name in tls.__all__:
        homes = [module for module in (tls_engine, tls_server) if name in module.__all__]
        assert len(homes) == 1, name
        assert getattr(tls, name) is getattr(homes[0], name), name


def test_the_server_touches_no_private_member_of_its_engines() -> None:
    """Infrastructure: in TlsServer every ``x._name`` has ``x`` = ``self`` (the engine's state stays its own)."""
    tree = ast.parse(inspect.getsource(tls_server.TlsServer))
    foreign = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert foreign == []
