"""A hardened codec for WeChat's XML and JSON payloads.

Everything WeChat pushes reaches the internet-facing gateway, so parsing refuses DTDs and entities
(XXE, billion laughs), caps size, depth and element count, and never turns a number into a float:
order ids and MsgIds are 64-bit and JSON floats would corrupt them. Values come back exactly as sent
(whitespace included): the payload is stored and published as WeChat sent it, and the push models
(``shared.wechat.push``) strip what they read, as the SDKs do. A UTF-8 byte order mark is accepted
before JSON just as the XML parser accepts it.
"""

from __future__ import annotations

import codecs
import decimal
import json
import re
from collections.abc import Mapping
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from shared.errors import PayloadTooLarge
from shared.wechat.crypto import MalformedPush

DEFAULT_MAX_BYTES = 256 * 1024
# WeChat's deepest XML (subscribe_msg_*_event) is 4 levels; shop JSON objects about as deep.
MAX_DEPTH = 8
MAX_ELEMENTS = 4096

_ILLEGAL_XML_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TAG = re.compile(r"[A-Za-z_][\w.-]*")


def _check_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the body is {len(data)} bytes; the limit is {max_bytes}")


def parse_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """``<xml>`` → {tag: text | nested dict | list of repeated siblings}; every leaf stays a str."""
    _check_size(data, max_bytes)
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise MalformedPush(f"the XML declares a DTD or entities, which WeChat never sends ({exc})") from None
    except ParseError as exc:
        raise MalformedPush(f"the body is not well-formed XML ({exc})") from None
    if root.tag != "xml":
        raise MalformedPush(f"the XML root is <{root.tag}>, not <xml>")
    counter = [0]
    value = _element(root, 1, counter)
    return value if isinstance(value, dict) else {}


def _element(elem: Element, depth: int, counter: list[int]) -> str | dict[str, Any]:
    counter[0] += 1
    if counter[0] > MAX_ELEMENTS:
        raise MalformedPush(f"the XML has more than {MAX_ELEMENTS} elements")
    if depth > MAX_DEPTH:
        raise MalformedPush(f"the XML is nested deeper than {MAX_DEPTH} levels")
    if len(elem) == 0:
        return elem.text or ""
    out: dict[str, Any] = {}
    for child in elem:
        value = _element(child, depth + 1, counter)
        if child.tag not in out:
            out[child.tag] = value
        elif isinstance(out[child.tag], list):
            out[child.tag].append(value)
        else:
            out[child.tag] = [out[child.tag], value]
    return out


def is_json_document(data: bytes) -> bool:
    """Whether a push body is JSON rather than XML: it opens with ``{`` after an optional BOM and whitespace."""
    return data.removeprefix(codecs.BOM_UTF8).lstrip()[:1] == b"{"


def _reject_constant(name: str) -> Any:
    raise MalformedPush(f"the JSON contains {name}, which is not a number")


def parse_json(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """A UTF-8 JSON object (a leading BOM is dropped); integers stay exact ints, decimals become Decimal."""
    _check_size(data, max_bytes)
    try:
        value = json.loads(data.decode("utf-8-sig"), parse_float=decimal.Decimal, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise MalformedPush("the JSON body is not UTF-8") from None
    except RecursionError:
        raise MalformedPush(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and ints longer than Python's digit limit
        raise MalformedPush(f"the body is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise MalformedPush(f"the JSON root is {type(value).__name__}, not an object")
    _check_depth(value, 1)
    return value


def _check_depth(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise MalformedPush(f"the JSON is nested deeper than {MAX_DEPTH} levels")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        if isinstance(child, dict | list):
            _check_depth(child, depth + 1)


def cdata(text: str) -> str:
    """A CDATA section holding ``text`` exactly, minus characters XML 1.0 cannot carry."""
    text = _ILLEGAL_XML_CHARS.sub("", text)
    # "]]>" would end the section early (and let echoed user text inject elements): split it.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render_xml(root: Mapping[str, Any]) -> str:
    """The inverse of parse_xml for replies: str → CDATA, int → bare, Mapping → element, list → repeats.

    ``None`` values are left out, so optional reply fields can be passed as they are.
    """
    return f"<xml>{_render_children(root)}</xml>"


def _render_children(node: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for tag, value in node.items():
        if not _TAG.fullmatch(tag):
            raise ValueError(f"{tag!r} is not a usable XML element name")
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                parts.append(f"<{tag}>{_render_value(item)}</{tag}>")
    return "".join(parts)


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        return cdata(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Mapping):
        return _render_children(value)
    raise TypeError(f"cannot render {type(value).__name__} as WeChat XML")
