"""The HTML report as a reader sees it: rendered by a real headless browser (Chromium), the page
never scrolls sideways at a laptop's width (wide tables scroll inside their own block), every
embedded figure decodes, every contents link lands on a section. Skips where no headless browser
is installed (``apt-get install chromium``; ``.ci/run`` installs it)."""

import html
import json
import re
import shutil
import subprocess

import pytest

from fmbench.report import build
from fmbench.runner import run_suite
from fmbench.suite import load_suite
from tests.conftest import TINY

pytestmark = pytest.mark.slow

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome",
                                          "google-chrome-stable") if shutil.which(n)), None)

# measured after the load event and written into the DOM that --dump-dom prints
PROBE = """<script>
window.addEventListener('load', () => {
  const d = document.documentElement, imgs = [...document.images];
  const blocks = [...document.querySelectorAll('.scroll')];
  const r = {
    page_overflow: d.scrollWidth - d.clientWidth,
    images: imgs.length,
    broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
    images_past_edge: imgs.filter(i => i.getBoundingClientRect().right > d.clientWidth + 1).length,
    scrolling_blocks: blocks.filter(b => b.scrollWidth > b.clientWidth).length,
    toc_links: [...document.querySelectorAll('nav.toc a')].length,
    dead_toc_links: [...document.querySelectorAll('nav.toc a')]
      .filter(a => !document.getElementById(a.getAttribute('href').slice(1))).length,
    table_font_px: parseFloat(getComputedStyle(document.querySelector('td')).fontSize),
  };
  const pre = document.createElement('pre');
  pre.id = 'probe'; pre.textContent = JSON.stringify(r); document.body.appendChild(pre);
});
</script>"""


def _render(page, width: int, tmp_path) -> dict:
    probe = tmp_path / f"probe-{width}.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},900",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the browser printed no probe result: {dom[-500:]!r}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(BROWSER is None, reason="no headless browser (apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(tmp_path):
    f = tmp_path / "s.toml"  # three paths × two solvers × every 2D metric: a wide main table
    f.write_text(TINY.replace('[[path]]\nname = "otcfm"',
                              '[[path]]\nname = "otcfm"\n\n[[path]]\nname = "fm-ot"'))
    run_suite(load_suite(f), tmp_path / "run", cache_dir=tmp_path / "cache")
    page = build(tmp_path / "run", "html", tmp_path / "report")
    n_figures = page.read_text().count("<figure")
    for width in (1280, 800):
        r = _render(page, width, tmp_path)
        assert r["page_overflow"] <= 0, (width, r)  # the page never scrolls sideways
        assert r["images"] == n_figures >= 4 and r["broken_images"] == 0, r
        assert r["images_past_edge"] == 0, r
        assert r["toc_links"] >= 5 and r["dead_toc_links"] == 0, r
        assert r["table_font_px"] == 13, r  # the stylesheet applies
    assert r["scrolling_blocks"] >= 1, r  # at 800 px the main table scrolls in its block
