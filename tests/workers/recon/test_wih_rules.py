"""Every bundled Web Info Hunter rule on its own examples: each ``match`` text must give the rule a
record, each ``no_match`` text must not."""

from __future__ import annotations

import pytest

from workers.recon.wih import (
    WihRule,
    WihRuleError,
    extract,
    load_wih_rules,
    parse_wih_rules,
    valid_cn_id_card,
)

RULES = load_wih_rules()


def _found(rule: WihRule, text: str) -> list[str]:
    return [r.value for r in extract(text, [rule]) if r.rule == rule.id]


def test_rule_set_is_complete() -> None:
    assert len(RULES) >= 40
    assert len({r.id for r in RULES}) == len(RULES)
    ids = {r.id for r in RULES}
    for needed in (
        "aws-access-key-id",
        "alibaba-cloud-access-key-id",
        "tencent-cloud-secret-id",
        "huawei-cloud-access-key",
        "azure-storage-connection-string",
        "gcp-service-account",
        "github-token",
        "gitlab-token",
        "slack-token",
        "json-web-token",
        "dingtalk-webhook",
        "wecom-webhook",
        "feishu-webhook",
        "private-key",
        "password-in-url",
        "internal-ip",
        "internal-host",
        "api-call",
        "email",
        "cn-mobile",
        "cn-id-card",
        "jdbc-url",
    ):
        assert needed in ids, needed
    assert all(r.match_examples and r.no_match_examples for r in RULES), (
        "every rule has both kinds of example"
    )


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_examples(rule: WihRule) -> None:
    for text in rule.match_examples:
        assert _found(rule, text), f"{rule.id} should find a value in {text!r}"
    for text in rule.no_match_examples:
        assert not _found(rule, text), f"{rule.id} found {_found(rule, text)} in {text!r}"


def test_id_card_checksum_and_date() -> None:
    assert valid_cn_id_card("11010519491231002X") and valid_cn_id_card("11010519491231002x")
    assert not valid_cn_id_card("110105194912310021"), "wrong check digit"
    assert not valid_cn_id_card("110105194902300021"), "30 February"
    assert not valid_cn_id_card("1101051949123100")


def test_rule_options_are_validated() -> None:
    with pytest.raises(WihRuleError, match="validate"):
        parse_wih_rules({"rules": [{"id": "x", "type": "idcard", "regex": "a", "validate": "luhn"}]})
    with pytest.raises(WihRuleError, match="examples"):
        parse_wih_rules(
            {"rules": [{"id": "x", "type": "secret", "regex": "a", "examples": {"maybe": ["a"]}}]}
        )
