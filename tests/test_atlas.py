"""The token atlas: built from the commands' own output, every link and image resolves, and a
real headless browser (Debian's chromium driven by Playwright) clicks through it."""

import functools
import html.parser
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cortex_jax.figures import atlas
from tests.helpers import cli

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SKIP_BROWSER = (
    "no headless browser here: install Debian's chromium (`apt-get install -y chromium`) and "
    "Playwright's Python package (`pip install -e .[test]`); the test never downloads a browser"
)


_run = functools.partial(cli.run, check=True)  # every command here must succeed


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atlas")
    _run(
        "explain.sample",
        "--concept",
        "red-circle,blue-star,red-star",
        *cli.SMALL_SAMPLE,
        "--out",
        str(tmp / "sample"),
    )
    _run(
        "explain.codebook",
        "--concept",
        "blue-star",
        "--from-concept",
        "red-star",
        "--n-images",
        "1",
        "--steps",
        "20",
        "--log-every",
        "10",
        "--out",
        str(tmp / "edit"),
    )
    r = _run(
        "explain.atlas",
        "--sample",
        str(tmp / "sample"),
        "--edit",
        str(tmp / "edit"),
        "--table5",
        str(tmp / "none"),
        "--bias",
        "",
        "--compare",
        "",
        "--out",
        str(tmp / "site"),
    )
    assert "(3 concepts," in r.stdout
    return tmp / "site"


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and tag in ("img", "a", "link", "script"):
                self.refs.append(a[key])


def _assert_links_resolve_offline(page: Path) -> None:
    p = _Refs()
    p.feed(page.read_text())
    assert p.refs, page
    for ref in p.refs:
        assert "://" not in ref and not ref.startswith("//"), (page, ref)  # no network
        target = (page.parent / ref.split("#")[0]).resolve()
        assert target.is_file(), (page.name, ref)


@pytest.mark.slow
def test_a_rerun_rebuilds_its_own_site_and_never_touches_the_sample_folder(site):
    tmp = site.parent
    stale = site / "concepts" / "gone.html"
    stale.write_text("an atlas page of an earlier build")
    owner = site / ".cortex-jax-owner.json"
    owner.write_text(
        owner.read_text().replace('"files": [', '"files": [\n    "concepts/gone.html",')
    )
    args = ["--edit", str(tmp / "edit"), "--table5", str(tmp / "none"), "--bias", ""]
    args += ["--compare", str(tmp / "none")]
    r = cli.run("explain.atlas", "--sample", str(tmp / "sample"), *args, "--out", str(site))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--table5" in r.stdout and "not found" in r.stdout  # says which input it lacks
    assert "--compare" in r.stdout and "no methods page" in r.stdout
    assert not stale.exists() and (site / "index.html").exists()
    before = sorted(p.name for p in (tmp / "sample").iterdir())
    r = cli.run(
        "explain.atlas", "--sample", str(tmp / "sample"), *args, "--out", str(tmp / "sample")
    )
    cli.one_line_error(r, "holds the output of explain.sample")
    assert sorted(p.name for p in (tmp / "sample").iterdir()) == before


@pytest.mark.slow
def test_every_link_and_image_resolves_offline(site):
    pages = [site / "index.html", *sorted((site / "concepts").glob("*.html"))]
    assert len(pages) == 4
    for page in pages:
        _assert_links_resolve_offline(page)
    index = (site / "index.html").read_text()
    assert (
        index.count('data-name="') == 3 and "Figure 4" in index and "Edit toward blue-star" in index
    )
    for ext in (".png", ".svg", ".csv"):  # the curve as a figure and as data
        assert (site / "figures" / f"image_level_curve{ext}").stat().st_size > 0
    curve = (site / "figures" / "image_level_curve.csv").read_text().splitlines()
    assert curve[0].startswith("n,top-n TIS positions mean,top-n TIS positions se")


def test_methods_page_shows_the_compare_table_and_curves_offline(tmp_path):
    cmp, out = tmp_path / "compare", tmp_path / "site"
    (cmp / "curves").mkdir(parents=True)
    nan = float("nan")
    result = {
        "settings": {"images": 12, "iem": "toy ce"},
        "methods": {
            "gradient": {
                "deletion_auc_iem_baseline": {"value": 0.25, "ci": [0.2, 0.3]},
                "randomization_spearman": {"value": nan, "ci": [nan, nan]},
            },
            "random": {"deletion_auc_iem_baseline": {"value": 0.5, "ci": [0.45, 0.55]}},
        },
    }
    (cmp / "compare.json").write_text(json.dumps(result))
    Image.new("RGB", (4, 4)).save(cmp / "curves" / "deletion_iem_baseline.png")
    (cmp / "curves" / "deletion_iem_baseline.csv").write_text("n,gradient mean\n0,1\n")
    assert atlas.methods_page(out, tmp_path / "none") == ""  # no compare.json: no page
    section = atlas.methods_page(out, cmp)
    assert 'href="methods.html"' in section
    page = out / "methods.html"
    text = page.read_text()
    # metrics are rows, methods columns, each cell value [95 % interval]; undefined (NaN) is —,
    # a metric a method lacks is — too
    assert "<td>deletion_auc_iem_baseline</td><td>0.250 [0.200, 0.300]</td>" in text
    assert "<td>0.500 [0.450, 0.550]</td>" in text
    assert "<td>randomization_spearman</td><td>—</td><td>—</td>" in text
    assert (out / "methods" / "deletion_iem_baseline.csv").is_file()
    for name in ("index.html", "style.css", "atlas.js"):  # what build_atlas writes beside it
        (out / name).write_text(section if name == "index.html" else "")
    _assert_links_resolve_offline(page)
    assert "deletion_iem_baseline.svg" not in text  # only the files compare wrote are linked


@pytest.mark.slow
def test_a_person_clicks_through_the_atlas_in_a_real_browser(site, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason=SKIP_BROWSER)
    if not os.path.exists(CHROMIUM):
        pytest.skip(SKIP_BROWSER)
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    errors, failed = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        # A missing file is net::ERR_FILE_NOT_FOUND; a lazy image still loading when the test
        # navigates on is aborted, which is no broken link.
        page.on(
            "requestfailed",
            lambda r: (
                failed.append((r.url, r.failure)) if "ABORTED" not in (r.failure or "") else None
            ),
        )
        page.goto((site / "index.html").as_uri())
        rows = page.locator("#concepts tbody tr")
        assert rows.count() == 3
        expect = sync_api.expect  # assertions that wait (navigation, lazy images, layout)
        page.fill("#search", "star")  # the filter hides red-circle
        expect(rows.nth(0)).to_be_hidden()
        expect(rows.nth(1)).to_be_visible()
        expect(rows.nth(2)).to_be_visible()
        page.fill("#search", "star red")  # every word, in any order
        expect(page.locator('#concepts tr[data-name="red-star"]')).to_be_visible()
        expect(page.locator('#concepts tr[data-name="blue-star"]')).to_be_hidden()
        page.fill("#search", "")
        names = lambda: [rows.nth(i).get_attribute("data-name") for i in range(rows.count())]
        page.click("#concepts th >> nth=0")
        assert names() == sorted(names())
        page.click("#concepts th >> nth=0")  # again: reversed
        assert names() == sorted(names(), reverse=True)
        page.set_viewport_size({"width": 1400, "height": 900})
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400  # no sideways scroll
        with page.expect_navigation():
            page.click("text=blue-star")
        expect(page).to_have_title("blue-star")
        expect(page.locator("#tokens .card").first).to_be_visible()
        heat, boxes = page.locator("#shots img.heat").first, page.locator("#shots img.boxes").first
        expect(boxes).to_be_visible()
        expect(heat).to_be_hidden()
        page.click("#toggle")
        expect(heat).to_be_visible()
        expect(boxes).to_be_hidden()
        expect(page.locator("#toggle")).to_have_text("show TIS boxes")
        for url in (page.url, (site / "index.html").as_uri()):  # every image loads
            if url != page.url:
                page.goto(url)
            page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
            page.wait_for_function("[...document.images].every(i => i.complete)")
            broken = page.evaluate(
                "[...document.images].filter(i => !i.naturalWidth).map(i => i.src)"
            )
            assert not broken, broken
        page.screenshot(path=str(tmp_path / "concept.png"), full_page=True)
        browser.close()
    assert not errors and not failed, (errors, failed)
    assert (tmp_path / "concept.png").stat().st_size > 10_000
