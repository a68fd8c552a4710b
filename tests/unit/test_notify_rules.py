"""notify's pure parts: the rules file, WeChat's per-type value rules, quiet hours, the jump's attribution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.notify.funnel.endpoints import send_id_of
from services.notify.limits.service import QuietHours, beijing_day, beijing_week
from services.notify.rules.service import RenderError, Rule, check_rules, load_rules, render
from services.notify.settings import NotifySettings
from services.notify.templates.service import Channel, Template, TemplateLibrary, keys_of
from shared.errors import ConfigurationError

RULES = Path(NotifySettings.model_fields["message_rules_file"].default)


def rule(**kw: object) -> Rule:
    base: dict[str, object] = {
        "name": "r",
        "event": "commerce.order.paid",
        "template": "T",
        "channels": ["oa_template"],
        "fields": {"thing1": {"from": "title"}},
        "page": "pages/x?order_id={order_id}",
    }
    return Rule.model_validate({**base, **kw})


def test_values_are_shaped_to_wechat_types() -> None:
    r = rule(
        fields={
            "thing1": {"from": "title"},
            "amount2": {"from": "paid_fen"},
            "time3": {"from": "paid_at"},
            "character_string4": {"from": "order_id"},
            "phrase5": {"from": "tier", "map": {"gold": "金卡会员"}},
            "phrase6": {"from": "carrier", "default": "快递"},
            "number7": {"from": "points"},
        }
    )
    out = render(
        r,
        {
            "title": "山茶花精华面霜 50ml 滋润修护特别版礼盒装\n限量",
            "paid_fen": 12805,
            "order_id": "3705115058471208928",
            "paid_at": datetime(2026, 5, 1, 2, 30, tzinfo=UTC),
            "tier": "gold",
            "carrier": "SF Express",
            "points": 128,
            "event_id": "e1",
        },
    )
    data = {k: v["value"] for k, v in out.data.items()}
    assert len(data["thing1"]) <= 20 and data["thing1"].endswith("…") and "\n" not in data["thing1"]
    assert data["amount2"] == "¥128.05"
    assert data["time3"] == "2026年05月01日 10:30"  # Beijing time
    assert data["character_string4"] == "3705115058471208928"
    assert data["phrase5"] == "金卡会员"
    assert data["phrase6"] == "快递"  # Latin letters are no phrase: the default
    assert data["number7"] == "128"
    assert out.page == "pages/x?order_id=3705115058471208928"


def test_a_missing_value_is_a_render_error() -> None:
    with pytest.raises(RenderError):
        render(rule(), {"order_id": "1"})
    with pytest.raises(RenderError):
        render(rule(), {"title": "x"})  # the page names {order_id}


@pytest.mark.parametrize(
    "bad",
    [
        {"fields": {"thing1": {"from": "a", "value": "b"}}},
        {"fields": {"thing1": {}}},
        {"fields": {"notakey": {"from": "a"}}},
        {"channels": ["oa_template", "oa_template"]},
        {"channels": ["customer_service"]},  # needs text
        {"channels": ["sms"]},
        {"kind": "spam"},
        {"name": "Bad Name"},
    ],
)
def test_bad_rules_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        rule(**bad)


def test_the_committed_rules_fit_a_library_and_a_mismatch_stops_the_start() -> None:
    rules = load_rules(RULES)
    titles = {(r.template, c) for r in rules.all() for c in r.channels if c is not Channel.CUSTOMER_SERVICE}
    library = TemplateLibrary(
        tuple(
            Template(
                "wx1", f"id-{i}", title, channel, tuple(next(r for r in rules.all() if r.template == title).fields)
            )
            for i, (title, channel) in enumerate(sorted(titles))
        )
    )
    check_rules(rules, library)
    fewer = TemplateLibrary(tuple(t for t in library.templates if t.title != "订单支付成功通知"))
    with pytest.raises(ConfigurationError, match="order_paid"):
        check_rules(rules, fewer)
    other = TemplateLibrary(
        tuple(Template(t.appid, t.template_id, t.title, t.channel, (*t.keys, "thing9")) for t in library.templates)
    )
    with pytest.raises(ConfigurationError, match="thing9"):
        check_rules(rules, other)


def test_a_broken_rules_file_is_a_configuration_error(tmp_path: Path) -> None:
    for text in ("rules: [", "rules: []\n", "nonsense: 1\n"):
        p = tmp_path / "r.yaml"
        p.write_text(text)
        with pytest.raises(ConfigurationError, match="NOTIFY_MESSAGE_RULES_FILE"):
            load_rules(p)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_rules(tmp_path / "missing.yaml")


def test_template_content_keys() -> None:
    assert keys_of("订单编号:{{character_string1.DATA}}\n金额:{{ amount2.DATA }}\n") == ("character_string1", "amount2")


def bj(h: int, m: int = 0, day: int = 4) -> datetime:
    return datetime(2026, 12, day, h, m, tzinfo=UTC) - timedelta(hours=8)


def test_quiet_hours_wrap_midnight_in_beijing_time() -> None:
    q = QuietHours.parse("22:00-08:00")
    assert q.ends_at(bj(21, 59)) is None
    assert q.ends_at(bj(22, 0)) == bj(8, 0, day=5)
    assert q.ends_at(bj(3, 0)) == bj(8, 0)
    assert q.ends_at(bj(8, 0)) is None
    day = QuietHours.parse("12:00-14:00")
    assert day.ends_at(bj(13, 0)) == bj(14, 0) and day.ends_at(bj(14, 0)) is None
    assert QuietHours.parse("").ends_at(bj(23)) is None
    for bad in ("22-08", "25:00-08:00", "22:00-22:00", "22:00 - 08:00"):
        with pytest.raises(ValueError):
            QuietHours.parse(bad)


def test_beijing_day_and_week() -> None:
    # 2026-12-06 23:30 UTC is Monday 2026-12-07 07:30 in Beijing.
    t = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)
    assert str(beijing_day(t)) == "2026-12-07" and str(beijing_week(t)) == "2026-12-07"
    assert str(beijing_week(t - timedelta(hours=8))) == "2026-11-30"


def test_attribution_is_read_from_the_jump() -> None:
    assert send_id_of("pages/o?order_id=1&siyu_send=42&siyu_rule=order_paid") == 42
    assert send_id_of("pages/o?order_id=1") is None
    assert send_id_of("pages/o?siyu_send=1&siyu_send=2") is None
    assert send_id_of("pages/o?siyu_send=-1") is None
