"""`dvc plots show` renders with no network: the page DVC writes inlines Vega, Vega-Lite and vega-embed
(pipeline/offline_plots.py, named in .dvc/config), so a cluster node or a laptop offline sees the charts.
Checked in headless Chromium with every request sent to a closed port on 127.0.0.1."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dag import clone_of_this_checkout, sh

REPO = Path(__file__).resolve().parents[1]
BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def test_the_repo_names_the_offline_template_and_it_has_dvcs_placeholders():
    from pipeline.offline_plots import TEMPLATE, template_html

    config = (REPO / ".dvc/config").read_text()
    assert re.search(r"^\[plots\]\s*\n\s*html_template = vega-offline\.html", config, re.M)
    assert TEMPLATE == Path(".dvc/vega-offline.html")
    page = template_html()
    assert "{plot_divs}" in page and "{refresh_tag}" in page and "{scripts}" not in page
    assert "window.vegaEmbed=" in page and "cdn.jsdelivr" not in page and "<script src" not in page


def offline_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, with no network: every request goes to a closed port."""
    out = subprocess.run([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                          "--virtual-time-budget=20000", "--window-size=1400,900", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180)
    return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_dvc_plots_show_renders_every_chart_offline(tmp_path):
    root = clone_of_this_checkout(tmp_path / "clone")
    subprocess.run([sys.executable, "-m", "pipeline.offline_plots", str(root)], check=True, cwd=REPO,
                   capture_output=True)  # what scripts/setup.sh does in a clone
    sh(f"dvc plots show -o {tmp_path / 'offline'}", root)
    html = (tmp_path / "offline/index.html").read_text()
    charts = html.count("vegaEmbed(")
    assert charts >= 10 and "<script src=" not in html  # every training curve, the histogram, the Pareto front
    dom = offline_dom(tmp_path / "offline/index.html")
    rendered = len(re.findall(r"<canvas|<svg", dom))
    assert rendered >= charts, f"{rendered} of {charts} charts rendered offline"

    # DVC's own page, as before this template: its scripts come from a CDN, and offline nothing renders
    from dvc_render.html import PAGE_HTML

    (tmp_path / "dvc_default.html").write_text(PAGE_HTML)
    sh(f"dvc plots show --html-template {tmp_path / 'dvc_default.html'} -o {tmp_path / 'cdn'}", root)
    assert "cdn.jsdelivr.net" in (tmp_path / "cdn/index.html").read_text()
    assert not re.findall(r"<canvas|<svg", offline_dom(tmp_path / "cdn/index.html"))
