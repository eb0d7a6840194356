"""Test helper: compare Spyne models and WSDL bindings with the authored WSDL/XSD files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lxml import etree

from iec62676_2_33 import schemas

XS = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"


def xsd_parts(files: Sequence[str], type_name: str) -> list[tuple[str, str]]:
    """(name, element|attribute) of a complex type, its base types first, looked up in ``files``."""
    for file in files:
        ctype = etree.parse(str(schemas.xsd_path(file))).find(f"{{{XS}}}complexType[@name='{type_name}']")
        if ctype is not None:
            break
    else:
        raise AssertionError(f"no complexType {type_name} in {files}")
    base = ctype.find(f".//{{{XS}}}extension")
    parts = xsd_parts(files, base.get("base").split(":")[1]) if base is not None and base.get(
        "base").startswith("tt:") else []
    parts += [(e.get("name"), "element") for e in ctype.iter(f"{{{XS}}}element")]
    parts += [(a.get("name"), "attribute") for a in ctype.iter(f"{{{XS}}}attribute")]
    return parts


def assert_model_matches(model: Any, files: Sequence[str], type_name: str, optional: Sequence[str] = ()) -> None:
    """The model carries the XSD type's names, element order and kinds (``optional`` parts aside)."""
    from spyne.model.complex import XmlAttribute

    def kind(t: Any) -> str:
        return "attribute" if isinstance(t, type) and issubclass(t, XmlAttribute) else "element"

    spyne_side = [(name, kind(t)) for name, t in model._type_info.items()]
    xsd_side = [(n, k) for n, k in xsd_parts(files, type_name) if n not in optional]
    assert sorted(spyne_side, key=lambda p: p[1]) == sorted(xsd_side, key=lambda p: p[1])  # attributes: any order
    assert [p for p in spyne_side if p[1] == "element"] == [p for p in xsd_side if p[1] == "element"]


def binding_actions(wsdl: str) -> tuple[tuple[str | None, str | None], dict[str, str]]:
    """The first binding's (name, type) and its soapAction per operation."""
    binding = etree.parse(str(schemas.wsdl_path(wsdl))).find(f"{{{WSDL}}}binding")
    actions = {op.get("name"): op.find(f"{{{SOAP12}}}operation").get("soapAction")
               for op in binding.findall(f"{{{WSDL}}}operation")}
    return (binding.get("name"), binding.get("type")), actions


def token_types(xsd: str) -> dict[str, set[str]]:
    """Every element/attribute named like a token (``token``, ``…Token``) → the types it is declared with."""
    out: dict[str, set[str]] = {}
    for item in etree.parse(str(schemas.xsd_path(xsd))).iter(f"{{{XS}}}element", f"{{{XS}}}attribute"):
        name = item.get("name") or ""
        if name == "token" or name.endswith("Token"):
            out.setdefault(name, set()).add(item.get("type") or "")
    return out
