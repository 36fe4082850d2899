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


def test_pngs_are_rendered_from_the_specs_dvc_shows(tmp_path, monkeypatch):
    """`python -m pipeline.offline_plots --png`: each Vega plot of `dvc plots show --json` (here a training
    curve, nested in a folder) becomes a PNG of that very spec; image plots are left as they are."""
    import json

    from PIL import Image

    from pipeline.offline_plots import render_pngs

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "plots/train").mkdir(parents=True)
    (tmp_path / "plots/train/teacher.csv").write_text("step,l1\n10,0.05\n20,0.03\n30,0.02\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "plots/crops.png")
    (tmp_path / "dvc.yaml").write_text("plots:\n  - plots/train/teacher.csv:\n      x: step\n      y: l1\n"
                                       "      title: teacher L1\n  - plots/crops.png\n")
    monkeypatch.chdir(tmp_path)
    written = render_pngs()
    assert [p.name for p in written] == ["train__teacher.png"]
    with Image.open(written[0]) as png:
        assert png.width > 200 and png.height > 100 and len(set(png.convert("L").getdata())) > 2  # drawn
    shown = json.loads(subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], capture_output=True,
                                      text=True, check=True).stdout)
    spec = shown["data"]["plots/train/teacher.csv"][0]["content"]
    import vl_convert

    assert vl_convert.vegalite_to_png(spec, scale=2) == written[0].read_bytes()  # the same spec, the same pixels
