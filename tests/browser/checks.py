"""What every page must pass in the browser, at 1366 and 390 px: the money a finance
reader sees, Cost on screen, and no serious or critical axe-core violation.

`look_at(page, name)` runs every check at both widths and saves a screenshot of
each under screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

AXE = Path(__file__).parent / "assets" / "axe.min.js"  # axe-core 4.14.1, see assets/README.md
AXE_VERSION = "4.14.1"
WIDTHS = (1366, 390)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
MONEY_HEADERS = ("Cost", "Amount")

# Each `.money` element: its exact amount and the text a reader sees (the exact
# figure a focus away is in `.exact`, which is not what the row reads).
_AMOUNTS_JS = """() => [...document.querySelectorAll('[data-amount]')].map(el => {
    const copy = el.cloneNode(true);
    copy.querySelectorAll('.exact').forEach(e => e.remove());
    return [el.dataset.amount, copy.textContent.trim()];
})"""

# Every visible table's Cost (or Amount) column: is its header on screen and inside
# its box as the page opens, so no sideways scrolling is needed to see it?
_COST_COLUMNS_JS = """(headers) => [...document.querySelectorAll('table')]
  .filter(t => t.offsetParent !== null)
  .map(t => {
    const th = [...t.querySelectorAll('thead th')]
      .find(h => h.offsetParent !== null && headers.some(name => h.textContent.trim().startsWith(name)));
    if (!th) return null;
    const box = th.getBoundingClientRect();
    const scroller = t.closest('.table-wrap, .results, #changelist') || t.parentElement;
    const frame = scroller.getBoundingClientRect();
    return {caption: (t.caption && t.caption.innerText) || t.id || t.className,
            right: box.right, frame: frame.right, viewport: window.innerWidth,
            scrolled: scroller.scrollWidth > scroller.clientWidth + 1};
  }).filter(Boolean)"""


def amounts_shown(page) -> list[tuple[Decimal, str]]:
    return [(Decimal(exact), text) for exact, text in page.evaluate(_AMOUNTS_JS)]


def assert_money_reads_right(page) -> None:
    """No non-zero amount shown as $0.00, and no exponent or raw 12-place figure."""
    text = page.locator("body").inner_text()
    assert "0E-" not in text, page.url
    assert ".000000000000" not in text, page.url
    for exact, shown in amounts_shown(page):
        if exact != 0:
            assert shown.lstrip("-").lstrip("$").strip() not in ("0.00", ""), (page.url, exact)
            assert shown not in ("$0.00", "-$0.00"), (page.url, exact, shown)


def assert_cost_on_screen(page) -> None:
    for column in page.evaluate(_COST_COLUMNS_JS, list(MONEY_HEADERS)):
        assert column["right"] <= column["viewport"] + 0.5, (page.url, column)
        assert column["right"] <= column["frame"] + 0.5, (page.url, column)


def axe_violations(page) -> list[dict]:
    """Serious and critical axe-core violations of the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    results = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    assert results["testEngine"]["version"] == AXE_VERSION
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"][:5]],
        }
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def look_at(page, name: str, *, cost_at: tuple[int, ...] = WIDTHS) -> None:
    """Every check at 1366 and 390 px, a screenshot of each; back to 1366 at the end.

    `cost_at`: the widths at which each table's Cost (or Amount) column must be
    on screen without scrolling sideways (the admin's wide ledger tables scroll
    inside their box on a phone).
    """
    SCREENSHOTS.mkdir(exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(50)  # media queries settle
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (page.url, width)
        assert_money_reads_right(page)
        if width in cost_at:
            assert_cost_on_screen(page)
        violations = axe_violations(page)
        assert not violations, (page.url, width, violations)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})
