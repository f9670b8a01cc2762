"""Site fingerprints: the technology database matcher, our own rules, and the loopback lab
(planted product pages found with their versions; a false-positive corpus that yields nothing)."""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

import pytest

from tests.lab.fingerlab import (
    ALLOWED_ON_CORPUS,
    FALSE_POSITIVES,
    LAB_ICON,
    LAB_ICON_RULES,
    PLANTED,
    host_of,
    shodan_hash,
    start_fingerprint_lab,
)
from tests.lab.plantsite import PlantSite
from workers.recon.fingerprints import Document, PageFacts, RuleError, load_rules, parse_rules
from workers.recon.sites import Endpoint, SiteResult, favicon_hash, identify_site
from workers.recon.technologies import (
    Pattern,
    Technology,
    TechnologyDB,
    fingerprint_page,
    js_regex,
    load_technologies,
    parse_pattern,
    parse_selector,
    required_literal,
    select,
)


def test_database_comes_from_the_package_and_is_large() -> None:
    db = load_technologies()
    assert len(db) >= 1500
    assert {"Nginx", "WordPress", "jQuery", "Jenkins", "Drupal", "Joomla"} <= set(db.technologies)
    assert db.categories[1] == "CMS"


def test_pattern_tags_versions_and_ternaries() -> None:
    pattern = parse_pattern("nginx(?:/([\\d.]+))?\\;version:\\1\\;confidence:60")
    match = pattern.search("nginx/1.25.3")
    assert match is not None
    assert (pattern.resolve_version(match), pattern.confidence) == ("1.25.3", 60)
    ternary = parse_pattern("shop(-pro)?\\;version:\\1?Pro:Basic")
    found = ternary.search("a shop-pro site")
    assert found is not None and ternary.resolve_version(found) == "Pro"
    found = ternary.search("a shop site")
    assert found is not None and ternary.resolve_version(found) == "Basic"
    assert parse_pattern("").search("anything") is not None


def test_js_regex_dialect_and_required_literals() -> None:
    assert js_regex(r"\APC\b") == r"APC\b"
    assert js_regex(r"(?<ver>[\d.]+)") == r"(?P<ver>[\d.]+)"
    assert js_regex(r"(?<=a)b(?<!c)") == r"(?<=a)b(?<!c)"
    assert required_literal(r"app\.11sight\.com/") == "app.11sight.com/"
    assert required_literal(r"nginx(?:/([\d.]+))?") == "nginx"
    assert required_literal("foo|bar") == ""
    assert required_literal("abc?def") == "def"
    assert required_literal(r"x{2,3}yzw") == "yzw"
    assert required_literal(r"a[\]]bcd") == "bcd"
    pattern = parse_pattern(r"Powered by (\w+)")
    assert pattern.search("POWERED BY Gitea") is not None


def _literal_runs(source: str) -> list[str]:
    """The runs of plain characters at the top level of a regex, as Python's own parser sees it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = sre_parser.parse(js_regex(source), re.IGNORECASE)
    runs, current = [], ""
    for op, arg in parsed.data:
        if op is sre_constants.LITERAL:
            current += chr(arg)
        else:
            runs.append(current)
            current = ""
    return [r.lower() for r in [*runs, current] if r]


def _patterns_of(tech: Technology) -> Iterable[Pattern]:
    for keyed in (tech.headers, tech.cookies, tech.meta, tech.texts):
        for patterns in keyed.values():
            yield from patterns
    for rule in tech.dom:
        for _, patterns in rule.attributes:
            yield from patterns
        yield from rule.text


def test_every_database_pattern_compiles_and_its_prefilter_is_sound() -> None:
    checked = 0
    for tech in load_technologies().technologies.values():
        for pattern in _patterns_of(tech):
            if not pattern.source:
                continue
            assert pattern.regex is not None, (tech.name, pattern.source)
            if pattern.literal:
                checked += 1
                runs = _literal_runs(pattern.source)
                assert any(pattern.literal in run for run in runs), (
                    tech.name,
                    pattern.source,
                    pattern.literal,
                )
    assert checked > 3000


def test_selectors_on_a_static_document() -> None:
    doc = Document.parse(
        '<div id="main" class="wp-block-group x"><div class="wp-block-columns"><a href="https://jenkins.io/">'
        "v</a></div></div><span class=jenkins_ver><a href='https://jenkins.io/'>Jenkins 2.4</a></span>"
        '<link rel="stylesheet" href="/wp-content/x.css"><input name="__VIEWSTATE" type="hidden">'
    )

    def picks(selector: str) -> list[str]:
        steps = parse_selector(selector)
        assert steps is not None, selector
        return [e.tag for e in select(doc, steps)]

    assert picks("div[class*='wp-block-group'] > div[class*='wp-block-']") == ["div"]
    assert picks("link[rel=stylesheet][href*='/wp-content/']") == ["link"]
    assert picks("span.jenkins_ver > a[href='https://jenkins.io/']") == ["a"]
    assert picks("#main a") == ["a"]
    assert picks("div > a") == ["a"]
    assert picks("input[name*='__VIEWSTATE']") == ["input"]
    assert picks("span > div") == []
    assert parse_selector("a + b") is None
    assert doc.text_of(doc.by_tag["span"][0]) == "Jenkins 2.4"


def _db(technologies: dict[str, Any]) -> TechnologyDB:
    return TechnologyDB(technologies, {"1": {"name": "CMS"}, "6": {"name": "Ecommerce"}})


def test_implies_excludes_and_requirements() -> None:
    db = _db(
        {
            "ShopKit": {
                "cats": [6],
                "headers": {"X-Shop": "([\\d.]+)\\;version:\\1"},
                "implies": "Lang\\;confidence:50",
            },
            "Lang": {"cats": [1]},
            "Plugin": {"cats": [1], "html": "shopkit-plugin", "requires": "ShopKit"},
            "Courier": {"cats": [1], "text": "\\bCourierCo\\b", "requiresCategory": 6},
            "OldShop": {"cats": [6], "meta": {"generator": "OldShop"}, "excludes": "ShopKit"},
            "Widget": {"cats": [1], "dom": {"div.w": {"attributes": {"data-v": "v([\\d.]+)\\;version:\\1"}}}},
            "Cookie": {"cats": [1], "cookies": {"sess_id": ""}},
            "Badge": {
                "cats": [1],
                "dom": {"span.badge": {"exists": "", "attributes": {"title": "v([\\d.]+)\\;version:\\1"}}},
            },
            "Both": {
                "cats": [1],
                "headers": {"X-Both": ""},
                "dom": {"i.v": {"attributes": {"data-v": "([\\d.]+)\\;version:\\1"}}},
            },
        }
    )
    page = PageFacts(
        headers={"x-shop": "2.1", "set-cookie": "sess_id=1; Path=/"},
        body='<p>shopkit-plugin CourierCo</p><div class="w" data-v="v3.4"></div>'
        '<span class="badge" title="v7.1">b</span><i class="v"></i><i class="v" data-v="2.5"></i>',
    )
    page.headers["x-both"] = "1"
    found = {d.name: d for d in db.analyze(page)}
    assert found["Badge"].version == "7.1" and found["Both"].version == "2.5"
    assert found["ShopKit"].version == "2.1"
    assert found["Lang"].confidence == 50
    assert {"Plugin", "Courier", "Widget", "Cookie"} <= set(found)
    assert found["Widget"].version == "3.4"
    alone = {d.name for d in db.analyze(PageFacts(body="<p>shopkit-plugin CourierCo</p>"))}
    assert alone == set(), "requires and requiresCategory hold back what depends on ShopKit"
    both = PageFacts(headers={"x-shop": "1"}, body='<meta name="generator" content="OldShop">')
    assert {d.name for d in db.analyze(both)} == {"OldShop", "Lang"}


def test_rules_merge_with_the_database_by_name_and_alias() -> None:
    page = PageFacts(headers={"server": "Microsoft-IIS/10.0", "x-aspnet-version": "4.0.30319"})
    names = [d.name for d in fingerprint_page(load_rules(), page)]
    assert "Microsoft IIS" in names and "IIS" not in names
    assert "ASP.NET" in names and "Microsoft ASP.NET" not in names


def test_title_alone_is_rejected_and_all_groups_work() -> None:
    for bad in (
        {"rules": [{"name": "x", "matchers": [{"type": "title", "contains": "x"}]}]},
        {"rules": [{"name": "x", "condition": "and", "matchers": [{"type": "title", "contains": "x"}]}]},
        {"rules": [{"name": "x", "matchers": [{"type": "regex", "part": "title", "pattern": "x"}]}]},
        {
            "rules": [
                {"name": "x", "matchers": [{"type": "all", "matchers": [{"type": "title", "contains": "a"}]}]}
            ]
        },
        {"rules": [{"name": "x", "matchers": [{"type": "body", "contains": "a", "version": "no-group"}]}]},
    ):
        with pytest.raises(RuleError):
            parse_rules(bad)
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "Thing",
                    "categories": ["CMS"],
                    "matchers": [
                        {
                            "type": "all",
                            "matchers": [
                                {"type": "title", "contains": "thing"},
                                {"type": "body", "contains": "thing.js", "version": r"thing\.js\?v=([\d.]+)"},
                            ],
                        }
                    ],
                }
            ]
        }
    )
    found = fingerprint_page(rules, PageFacts(title="Thing", body="<script src=thing.js?v=1.2></script>"))
    assert [(d.name, d.version, d.categories) for d in found if d.source == "rules"] == [
        ("Thing", "1.2", ["CMS"])
    ]
    assert fingerprint_page(rules, PageFacts(title="Thing shop", body="<p>a thing</p>")) == []


def test_favicon_hash_is_the_shodan_one() -> None:
    for data in (LAB_ICON, b"x" * 57, b"x" * 58, bytes(1000)):
        assert favicon_hash(data) == shodan_hash(data)


def test_bundled_rules_cover_the_products_arl_targets() -> None:
    rules = load_rules()
    names = " ".join(r.name for r in rules)
    for product in (
        "Weaver",
        "Yonyou NC",
        "Yonyou U8",
        "Seeyon",
        "Tongda",
        "Landray",
        "Kingdee",
        "FineReport",
    ):
        assert product in names
    for product in (
        "RuoYi",
        "Nacos",
        "XXL-JOB",
        "Druid",
        "Harbor",
        "Ruijie",
        "H3C",
        "Huawei",
        "Hikvision",
        "Dahua",
    ):
        assert product in names
    hashes = [m.hash for r in rules for m in r.matchers if m.type == "favicon_hash"]
    assert len(hashes) >= 40 and len(set(hashes)) == len(hashes)
    assert all(h is not None and -(2**31) <= h < 2**31 for h in hashes)


@pytest.fixture(scope="module")
def fingerprint_lab() -> Iterator[PlantSite]:
    site = start_fingerprint_lab()
    yield site
    site.stop()


async def _no_redirects(host: str) -> str | None:
    return None


def _identify(site: PlantSite, keys: list[str], extra_rules: list[Path]) -> dict[str, SiteResult | None]:
    rules = load_rules(extra_rules)

    async def run() -> dict[str, SiteResult | None]:
        results = await asyncio.gather(
            *(
                identify_site(Endpoint("http", host_of(key), site.ip, site.port), rules, _no_redirects, 5.0)
                for key in keys
            )
        )
        return dict(zip(keys, results, strict=True))

    return asyncio.run(run())


def test_lab_planted_products_are_found_with_versions(fingerprint_lab: PlantSite, tmp_path: Path) -> None:
    extra = tmp_path / "icons.yaml"
    extra.write_text(LAB_ICON_RULES % shodan_hash(LAB_ICON), encoding="utf-8")
    assert len(PLANTED) >= 20
    results = _identify(fingerprint_lab, [p.key for p in PLANTED], [extra])
    for planted in PLANTED:
        site = results[planted.key]
        assert site is not None and site.status == 200, planted.key
        doc = site.to_doc()
        finger = {f["name"]: f for f in doc["finger"]}
        assert planted.product in site.fingerprints, (planted.key, site.fingerprints)
        assert [f["name"] for f in doc["finger"]] == site.fingerprints
        if planted.version:
            assert finger[planted.product]["version"] == planted.version, planted.key
        assert set(finger[planted.product]) == {"name", "version", "categories", "confidence"}
    camera = results["camera"]
    assert camera is not None and camera.favicon is not None
    assert camera.favicon["url"].endswith("/img/cam.ico")


def test_lab_false_positive_corpus_yields_no_products(fingerprint_lab: PlantSite) -> None:
    assert len(FALSE_POSITIVES) >= 19
    results = _identify(fingerprint_lab, list(FALSE_POSITIVES), [])
    for key, site in results.items():
        assert site is not None and site.status == 200, key
        assert set(site.fingerprints) <= ALLOWED_ON_CORPUS, (key, site.title, site.fingerprints)
