"""Signatures and AES envelopes against the SDKs' published vectors (research/wechat.md §7) and wechatpy."""

from __future__ import annotations

import base64
import json
import struct

import pytest
import xmltodict
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.utils import check_signature

from shared.errors import BadRequest, ConfigurationError, Unauthorized
from shared.wechat import crypto
from shared.wechat.apps import AppKind, WeChatApp
from shared.wechat.codec import parse_xml
from shared.wechat.crypto import (
    AppIdMismatch,
    BadBase64,
    BadKey,
    BadLength,
    BadPadding,
    Decrypted,
    InvalidSignature,
    MalformedPush,
    MessageCrypto,
    sign,
    verify_signature,
)

# --- vectors, copied byte-for-byte from research/wechat.md §7 ---------------------------------------

# §7.1 WxJava WxCryptUtilTest and §7.2 EasyWeChat EncryptorTest share token, key and appid.
OA_TOKEN = "pamtest"
OA_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OA_APPID = "wxb11529c136998cb6"
OA_TIMESTAMP = "1409304348"
OA_NONCE = "xxxxxx"
OA_RANDOM = b"aaaabbbbccccdddd"
OA_MSG_SIGNATURE_1 = "82c962d39941aa48552f90ef55aa323dc620cc10"
EW_RANDOM = b"d43123b161a4ba84"
# §7.3 wechatpy tests/test_crypto.py (WeCom-style; the corp id is the trailing id).
WORK_TOKEN = "123456"
WORK_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
WORK_ID = "wx49f0ab532d5d035a"
WORK_RANDOM = b"1234567890123456"
WORK_NONCE = "461056294"
WORK_TIMESTAMP = "1411525903"
# §7.4 PowerWeChat Encryptor_test.go: the trailing id is the corp id, not the agent id the test passes.
PW_APPID = "wwedab3d5fc43636d8"
OA_PLAIN_1 = "我是中文abcd123"
OA_ENCRYPT_1 = "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
OA_PLAIN_2 = (
    "<xml><ToUserName><![CDATA[oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw]]></ToUserName><FromUserName>"
    "<![CDATA[gh_7f083739789a]]></FromUserName><CreateTime>1407743423</CreateTime><MsgType><!"
    "[CDATA[video]]></MsgType><Video><MediaId><![CDATA[eYJ1MbwPRJtOvIEabaxHs7TX2D-HV71s79GUxq"
    "dUkjm6Gs2Ed1KF3ulAOA9H1xG0]]></MediaId><Title><![CDATA[testCallBackReplyVideo]]></Title>"
    "<Description><![CDATA[testCallBackReplyVideo]]></Description></Video></xml>"
)
OA_ENCRYPT_2 = (
    "jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesx"
    "lkupqcEcW7ZQweImX9+wLMa0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8H"
    "LXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+UW/wM9enGIDIJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77"
    "bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0nMJBU+jLKJ38YB1fBIz+vBzsYjrTmFQ44YfeEuZ+"
    "xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdfakjkwQ5/Xka042OlUb1/slTw"
    "o4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqmA7FNERsp"
    "KA5f8GoJ9sv8xmGvZ9Yrf57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMl"
    "aFExWUZQDajPkdPrEeOwofJb"
)
EW_SIGNATURE = "4f3ad57b6989f09f4eb392acce4f9e93942ed890"
EW_NONCE = "260774613"
EW_TIMESTAMP = "1458300676"
EW_ENCRYPT = (
    "rTNFcsut4LfGuAFKEUVVpwcaCOTJzOd9twZdIW910jb3k+iicx2uvhttIZ3Qg9Qgty3BEF2xbOrz6boTfb30dMom"
    "cgrkTqdFPwnhqbk+kIQ7rZiwny9D7NUrTgA5kpX3KsZvrXzUZyP2x9YOlxbgm572lmxKvM7HAQQhIQ/p6HBmoY30"
    "bGXFK0BtIu1pW9TjhOYrLQoU18nWYjWqDA1ynkmOytpv7QRI1P1+0NoxL0q2zO1DgeSvnE8CZGo/o5Ap/WHK5W2R"
    "AsinpzN4/LjPnmB6U01I5XCoJoC0GK/yMZycd2Oh8Nq6+wBkC1U85oy0ktOY4nLvsQMLrourmMGdZHuTbqpeJ8Ao"
    "/5PRYJ+WBvRUwPfGKBL2+2IKZF49vAJqkcGWSHGE76ZN2erXeuNazf/o9o3lIE3q739o4c8t9QGPe31GT2Go/rOz"
    "1BsrASwvauNulCh+++yz+CQzBIuikA=="
)
EW_PLAIN = (
    "<xml><URL><![CDATA[http://wechat.laravel.so/server]]></URL><ToUserName><![CDATA[asdasdas"
    "d]]></ToUserName><FromUserName><![CDATA[asdasdasdsadasd]]></FromUserName><CreateTime>123"
    "4567898</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Conte"
    "nt><MsgId>12345</MsgId></xml>"
)
WORK_ECHO_SIGNATURE = "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"
WORK_ECHO_TIMESTAMP = "1411443780"
WORK_ECHO_NONCE = "437374425"
WORK_ECHOSTR = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
WORK_ECHO_PLAIN = "5927782489442352469"
WORK_ECHO_BAD_NONCE = "437374424"
WORK_REPLY_PLAIN = (
    "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserN"
    "ame><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUs"
    "erName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>"
)
WORK_REPLY_ENVELOPE = (
    "<xml>\n<Encrypt><![CDATA[9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk"
    "+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfm"
    "stttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnw"
    "KKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oaz"
    "PoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3]]></Encrypt>\n<MsgSignature><![C"
    "DATA[407518b7649e86ef23978113f92d27afa9296533]]></MsgSignature>\n<TimeStamp>1411525903</T"
    "imeStamp>\n<Nonce><![CDATA[461056294]]></Nonce>\n</xml>"
)
WORK_SIGNATURE = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"
WORK_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHC"
    "rsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpX"
    "aG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQi"
    "MS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQi"
    "pvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
)
WORK_PLAIN = (
    "<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>\n<FromUserName><![CDATA[mess"
    "ense]]></FromUserName>\n<CreateTime>1411525903</CreateTime>\n<MsgType><![CDATA[text]]></Ms"
    "gType>\n<Content><![CDATA[test]]></Content>\n<MsgId>4363689963896700987</MsgId>\n<AgentID>1"
    "</AgentID>\n</xml>"
)
PW_TOKEN = "pcoLldqMu2WQQtYBeDX5HiXPsBFlTnDM"
PW_KEY = "CyjBvGm4tJNmcThkeL5Wajzom4jKlBygKtpTkYeqsnE"
PW_SIGNATURE = "d728d2bea7e28585ebd14eacbd330d84073fe7f1"
PW_TIMESTAMP = "1623301925"
PW_NONCE = "1624217036"
PW_ENCRYPT = (
    "ZBY4h9SD1Y/v+ighMGU4yHSVWyMuf2UdQQfFuB8S/SY5il9MynR1rtKIJDG871vOqaCs0FVje6bX0VyhvL02PG7F"
    "XjRR+rAyiwVv7T7nBGgamkPeOv4n/jXgFQnY6NEt3Zym09t4aI+21pDcE6uN6JzcC+hxw5sBfVyza3NHyuLiyhva"
    "lsFbasA4HNcnK+4/3eZLMo+e6yvHUsY4WhmZWW5u5mHcDZm1jtI2fUtzod6Sx7PrCOhm+zUO1I98OD0EmICxHHMj"
    "MkGmSFuGhG8vXRKaRavzvV/fkscZK1HjW+XJOV0c9wYDZT+/LTjDS/yx5KkM5lIksiw57DsCro9gvmE1WdvB3bw3"
    "m+5ie2x1ZRSuh6ik1rbMTiXgJXt0MnbV8VsyPe1zhkbug1cwdhT9zcOTieb0oyiIl3wSAEkNNBNBaWB+78V1hM/n"
    "gMoZgKaaasJUCGtPH/rN+YnxGicDOg=="
)
PW_PLAIN = (
    "<xml><ToUserName><![CDATA[wwedab3d5fc43636d8]]></ToUserName><FromUserName><![CDATA[WangC"
    "haoYi]]></FromUserName><CreateTime>1623301925</CreateTime><MsgType><![CDATA[text]]></Msg"
    "Type><Content><![CDATA[密文测试]]></Content><MsgId>6972028683187026694</MsgId><AgentID>10000"
    "05</AgentID></xml>"
)

OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"


def oa() -> MessageCrypto:
    return MessageCrypto(OA_TOKEN, OA_KEY, OA_APPID)


def _aes_key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")


def seal(encoding_aes_key: str, body: bytes) -> str:
    """Encrypt an arbitrary (already laid-out) body the way WeChat would, to forge bad plaintexts."""
    key = _aes_key(encoding_aes_key)
    pad = 32 - len(body) % 32
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(body + bytes([pad]) * pad) + enc.finalize()).decode()


def tamper(encrypt_b64: str, index: int, xor: int) -> str:
    raw = bytearray(base64.b64decode(encrypt_b64))
    raw[index] ^= xor
    return base64.b64encode(bytes(raw)).decode()


# --- §7.5 plain signatures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "timestamp", "nonce", "expected"),
    [
        ("test", "1410685589", "test", "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff"),
        ("AAAAA", "1714037059", "486452656", "899cf89e464efb63f54ddac96b0a0a235f53aa78"),
        ("AAAAA", "1714036504", "1514711492", "f464b24fc39322e44b38aa78f5edd27bd1441696"),
        ("a", "b", "c", "a9993e364706816aba3e25717850c26c9cd0d89d"),
    ],
)
def test_sign_matches_published_signatures(token: str, timestamp: str, nonce: str, expected: str) -> None:
    assert sign(token, timestamp, nonce) == expected
    verify_signature(expected, token, timestamp, nonce)
    check_signature(token, expected, timestamp, nonce)  # wechatpy agrees


def test_sign_sorts_its_inputs_before_hashing() -> None:
    assert sign("c", "a", "b") == sign("a", "b", "c") == "a9993e364706816aba3e25717850c26c9cd0d89d"


@pytest.mark.parametrize(
    "signature",
    [
        "f21891de399b4e33a1a93c9a7b8a8fffb5a443fe",  # the vector's own must-fail case
        "F21891DE399B4E33A1A93C9A7B8A8FFFB5A443FF",
        "",
        "签名",  # non-ASCII must be a clean 401, not a TypeError from compare_digest
    ],
)
def test_verify_signature_rejects_a_wrong_signature(signature: str) -> None:
    with pytest.raises(InvalidSignature) as err:
        verify_signature(signature, "test", "1410685589", "test")
    assert isinstance(err.value, Unauthorized)
    assert err.value.status == 401


# --- §7.1 WxJava ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("plain", "encrypt"), [(OA_PLAIN_1, OA_ENCRYPT_1), (OA_PLAIN_2, OA_ENCRYPT_2)])
def test_wxjava_vectors_encrypt_and_decrypt(plain: str, encrypt: str) -> None:
    assert oa().encrypt(plain.encode(), random_prefix=OA_RANDOM) == encrypt
    assert oa().decrypt(encrypt) == Decrypted(plain.encode(), 0)


def test_wxjava_vector_msg_signature() -> None:
    assert sign(OA_TOKEN, OA_TIMESTAMP, OA_NONCE, OA_ENCRYPT_1) == OA_MSG_SIGNATURE_1
    oa().check_msg_signature(OA_MSG_SIGNATURE_1, OA_TIMESTAMP, OA_NONCE, OA_ENCRYPT_1)
    with pytest.raises(InvalidSignature):
        oa().check_msg_signature("12345", OA_TIMESTAMP, OA_NONCE, OA_ENCRYPT_1)


def test_wxjava_vector_2_pads_with_seven_bytes() -> None:
    key = _aes_key(OA_KEY)
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = dec.update(base64.b64decode(OA_ENCRYPT_2)) + dec.finalize()
    assert plain[-7:] == bytes([7]) * 7
    assert plain[:16] == OA_RANDOM and plain[-7 - len(OA_APPID) : -7] == OA_APPID.encode()


# --- §7.2 EasyWeChat --------------------------------------------------------------------------------


def test_easywechat_vector_decrypts_and_reencrypts() -> None:
    oa().check_msg_signature(EW_SIGNATURE, EW_TIMESTAMP, EW_NONCE, EW_ENCRYPT)
    assert oa().decrypt(EW_ENCRYPT) == Decrypted(EW_PLAIN.encode(), 0)
    assert oa().encrypt(EW_PLAIN.encode(), random_prefix=EW_RANDOM) == EW_ENCRYPT


def test_easywechat_vector_negative_cases() -> None:
    with pytest.raises(InvalidSignature):
        oa().check_msg_signature("invalid-signature", EW_TIMESTAMP, EW_NONCE, EW_ENCRYPT)
    with pytest.raises(AppIdMismatch) as err:
        MessageCrypto(OA_TOKEN, OA_KEY, "invalid appid").decrypt(EW_ENCRYPT)
    assert "invalid appid" in err.value.detail
    assert err.value.status == 400


# --- §7.3 wechatpy (corp id as the trailing id) -----------------------------------------------------


def work() -> MessageCrypto:
    return MessageCrypto(WORK_TOKEN, WORK_KEY, WORK_ID)


def test_wechatpy_echostr_vector() -> None:
    work().check_msg_signature(WORK_ECHO_SIGNATURE, WORK_ECHO_TIMESTAMP, WORK_ECHO_NONCE, WORK_ECHOSTR)
    assert work().decrypt(WORK_ECHOSTR).plaintext == WORK_ECHO_PLAIN.encode()
    with pytest.raises(InvalidSignature):
        work().check_msg_signature(WORK_ECHO_SIGNATURE, WORK_ECHO_TIMESTAMP, WORK_ECHO_BAD_NONCE, WORK_ECHOSTR)


def test_wechatpy_reply_vector_is_rendered_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto.os, "urandom", lambda n: WORK_RANDOM)
    assert work().encrypt_reply_xml(WORK_REPLY_PLAIN, WORK_TIMESTAMP, WORK_NONCE) == WORK_REPLY_ENVELOPE


def test_wechatpy_decrypt_vector() -> None:
    work().check_msg_signature(WORK_SIGNATURE, WORK_TIMESTAMP, WORK_NONCE, WORK_ENCRYPT)
    assert work().decrypt(WORK_ENCRYPT) == Decrypted(WORK_PLAIN.encode(), 0)


# --- §7.4 PowerWeChat -------------------------------------------------------------------------------


def test_powerwechat_vector_decrypts_with_the_corp_id() -> None:
    c = MessageCrypto(PW_TOKEN, PW_KEY, PW_APPID)
    c.check_msg_signature(PW_SIGNATURE, PW_TIMESTAMP, PW_NONCE, PW_ENCRYPT)
    assert c.decrypt(PW_ENCRYPT).plaintext.decode() == PW_PLAIN
    # PowerWeChat's own test passes the agent id and only succeeds because it never checks.
    with pytest.raises(AppIdMismatch):
        MessageCrypto(PW_TOKEN, PW_KEY, "1000005").decrypt(PW_ENCRYPT)


# --- malformed ciphertexts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encrypt",
    [
        "not base64!",
        OA_ENCRYPT_1[:-2],  # lost its padding
        OA_ENCRYPT_1[:40] + "\n" + OA_ENCRYPT_1[40:],  # whitespace inside
        OA_ENCRYPT_1.replace("+", " "),  # the classic form-decoding mistake
        OA_ENCRYPT_1[:-2] + "密文",
    ],
)
def test_bad_base64_is_rejected(encrypt: str) -> None:
    with pytest.raises(BadBase64):
        oa().decrypt(encrypt)


def test_surrounding_whitespace_is_tolerated() -> None:
    assert oa().decrypt(f"  {OA_ENCRYPT_1}\r\n").plaintext == OA_PLAIN_1.encode()


@pytest.mark.parametrize("size", [0, 15, 20, 33])
def test_ciphertext_not_a_multiple_of_the_block_size(size: int) -> None:
    with pytest.raises(BadLength, match="multiple of 16"):
        oa().decrypt(base64.b64encode(b"\0" * size).decode())


@pytest.mark.parametrize("new_pad", [0, 33, 255])
def test_corrupted_last_block_is_bad_padding(new_pad: int) -> None:
    # CBC malleability: flipping byte -17 of the ciphertext flips the pad byte (7) of the plaintext.
    forged = tamper(OA_ENCRYPT_2, -17, 7 ^ new_pad)
    with pytest.raises(BadPadding):
        oa().decrypt(forged)


def test_inconsistent_pad_bytes_are_bad_padding() -> None:
    forged = tamper(OA_ENCRYPT_2, -18, 0x01)  # second-to-last pad byte becomes 6, last stays 7
    with pytest.raises(BadPadding):
        oa().decrypt(forged)


def test_length_field_too_large() -> None:
    # Flipping the first ciphertext block garbles only the random prefix and flips the length field.
    forged = tamper(OA_ENCRYPT_2, 0, 0x80)
    with pytest.raises(BadLength, match="length field"):
        oa().decrypt(forged)
    body = OA_RANDOM + struct.pack(">I", 0xFFFFFFFF) + b"hi" + OA_APPID.encode()
    with pytest.raises(BadLength, match="length field"):
        oa().decrypt(seal(OA_KEY, body))


def test_plaintext_shorter_than_its_header() -> None:
    with pytest.raises(BadLength, match="header"):
        oa().decrypt(seal(OA_KEY, b"0123456789"))


def test_wrong_key_fails_cleanly() -> None:
    with pytest.raises(MalformedPush) as err:
        MessageCrypto(OA_TOKEN, OTHER_KEY, OA_APPID).decrypt(OA_ENCRYPT_2)
    assert isinstance(err.value, BadRequest)


def test_empty_message_round_trips() -> None:
    assert oa().decrypt(oa().encrypt(b"")).plaintext == b""


# --- key rotation -----------------------------------------------------------------------------------


def rotated() -> MessageCrypto:
    return MessageCrypto(OA_TOKEN, OTHER_KEY, OA_APPID, previous_encoding_aes_key=OA_KEY)


def test_previous_key_is_accepted_and_reported() -> None:
    assert rotated().decrypt(OA_ENCRYPT_2) == Decrypted(OA_PLAIN_2.encode(), 1)
    fresh = rotated().encrypt(b"<xml/>")
    assert rotated().decrypt(fresh) == Decrypted(b"<xml/>", 0)


def test_reply_is_encrypted_with_the_key_that_worked() -> None:
    rx = rotated()
    key_index = rx.decrypt(OA_ENCRYPT_2).key_index
    reply = rx.encrypt_reply_xml("<xml>hi</xml>", "1700000000", "n1", key_index=key_index)
    envelope = parse_xml(reply.encode())
    # Someone still on the old key (WeChat mid-rotation) can read it; wechatpy agrees.
    assert oa().decrypt(envelope["Encrypt"]).plaintext == b"<xml>hi</xml>"
    old = WeChatCrypto(OA_TOKEN, OA_KEY, OA_APPID)
    assert old.decrypt_message(reply, envelope["MsgSignature"], "1700000000", "n1") == "<xml>hi</xml>"


def test_when_both_keys_fail_the_current_keys_error_is_raised() -> None:
    c = MessageCrypto(OA_TOKEN, OA_KEY, "wxsomeoneelse00000", previous_encoding_aes_key=OTHER_KEY)
    with pytest.raises(AppIdMismatch):
        c.decrypt(OA_ENCRYPT_2)


def test_encrypt_argument_checks() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        oa().encrypt(b"x", random_prefix=b"short")
    with pytest.raises(ValueError, match="index 1"):
        oa().encrypt(b"x", key_index=1)


# --- keys and apps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["short", OA_KEY + "H", OA_KEY[:-1] + "!"])
def test_bad_encoding_aes_key(key: str) -> None:
    with pytest.raises(BadKey):
        MessageCrypto(OA_TOKEN, key, OA_APPID)


def _app(**overrides: object) -> WeChatApp:
    fields: dict[str, object] = {
        "name": "brand-oa",
        "kind": AppKind.OFFICIAL_ACCOUNT,
        "appid": OA_APPID,
        "secret": "s",
        "token": OA_TOKEN,
        "encoding_aes_key": OA_KEY,
    }
    return WeChatApp.model_validate(fields | overrides)


def test_for_app() -> None:
    assert MessageCrypto.for_app(_app()).decrypt(OA_ENCRYPT_1).plaintext == OA_PLAIN_1.encode()
    app = _app(encoding_aes_key=OTHER_KEY, previous_encoding_aes_key=OA_KEY)
    assert MessageCrypto.for_app(app).decrypt(OA_ENCRYPT_1).key_index == 1


def test_for_app_without_a_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="brand-oa"):
        MessageCrypto.for_app(_app(encoding_aes_key=None))
    with pytest.raises(ConfigurationError, match="base64"):
        MessageCrypto.for_app(_app(encoding_aes_key=OA_KEY[:-1] + "!"))


# --- wechatpy as an independent oracle --------------------------------------------------------------

CHINESE_XML = (
    "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>"
    "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[你好，世界 🌏]]></Content><MsgId>6972028683187026694</MsgId></xml>"
)


def wechatpy_oa() -> WeChatCrypto:
    return WeChatCrypto(OA_TOKEN, OA_KEY, OA_APPID)


def test_messages_encrypted_by_wechatpy_decrypt_with_ours() -> None:
    envelope = wechatpy_oa().encrypt_message(CHINESE_XML, "nonce123", "1700000000")
    fields = parse_xml(envelope.encode())
    oa().check_msg_signature(fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"], fields["Encrypt"])
    assert oa().decrypt(fields["Encrypt"]) == Decrypted(CHINESE_XML.encode(), 0)


def test_our_reply_decrypts_with_wechatpy() -> None:
    reply = oa().encrypt_reply_xml(CHINESE_XML, "1700000000", "nonce123")
    fields = xmltodict.parse(reply)["xml"]
    assert list(fields) == ["Encrypt", "MsgSignature", "TimeStamp", "Nonce"]
    assert wechatpy_oa().decrypt_message(reply, fields["MsgSignature"], "1700000000", "nonce123") == CHINESE_XML
    with pytest.raises(InvalidSignatureException):
        wechatpy_oa().decrypt_message(reply, fields["MsgSignature"], "1700000001", "nonce123")


def test_our_json_reply_decrypts_with_wechatpy() -> None:
    reply = json.loads(oa().encrypt_reply_json('{"MsgType":"text"}', "1700000000", "nonce123"))
    assert list(reply) == ["Encrypt", "MsgSignature", "TimeStamp", "Nonce"]
    assert reply["TimeStamp"] == 1700000000
    plain = wechatpy_oa().decrypt_message(reply, reply["MsgSignature"], "1700000000", "nonce123")
    assert plain == '{"MsgType":"text"}'


@pytest.mark.parametrize("json_body", [False, True])
def test_encrypt_push_is_what_wechat_sends(json_body: bool) -> None:
    body, msg_signature = oa().encrypt_push(
        CHINESE_XML.encode(), "1700000000", "nonce123", to_user="gh_1", json_body=json_body
    )
    if json_body:
        doc = json.loads(body)
        assert list(doc) == ["ToUserName", "Encrypt"]
    else:
        doc = xmltodict.parse(body)["xml"]
        assert body.startswith(b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[")
    assert doc["ToUserName"] == "gh_1"
    plain = wechatpy_oa().decrypt_message(doc if json_body else body, msg_signature, "1700000000", "nonce123")
    assert plain == CHINESE_XML
    oa().check_msg_signature(msg_signature, "1700000000", "nonce123", doc["Encrypt"])


def test_encrypt_push_with_the_previous_key() -> None:
    body, msg_signature = rotated().encrypt_push(b"<xml/>", "1", "2", to_user="gh_1", key_index=1)
    assert wechatpy_oa().decrypt_message(body, msg_signature, "1", "2") == "<xml/>"


def test_fresh_random_prefix_each_time() -> None:
    assert oa().encrypt(b"same") != oa().encrypt(b"same")
