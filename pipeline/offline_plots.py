"""The HTML template of ``dvc plots show`` / ``dvc plots diff`` with Vega, Vega-Lite and vega-embed
inlined, so that the page renders with no network (a cluster node, a laptop offline): DVC's own page
loads them from a CDN and stays blank there.

    python -m pipeline.offline_plots        # writes .dvc/vega-offline.html (scripts/setup.sh runs it)
    python -m pipeline.offline_plots --png [rev ...]   # every DVC plot as a PNG, in plots/png/

The JavaScript is vl-convert-python's bundle of the three libraries (``javascript_bundle()``: a
maintained package, pinned in pyproject.toml), not a hand-kept copy; ``.dvc/config`` names the file as
``plots.html_template``. The page keeps DVC's placeholders (``{plot_divs}``, ``{refresh_tag}``) and drops
``{scripts}``, where DVC would put its CDN tags.

``--png`` renders the very Vega-Lite specs DVC fills for that page (``dvc plots show --json``, or ``dvc
plots diff <revs> --json``: the Pareto scatter, every training curve, the classifier's histogram) to PNG
with the same bundle's renderer, so a PNG and the HTML cannot disagree.
"""
from __future__ import annotations

import sys
from pathlib import Path

TEMPLATE = Path(".dvc/vega-offline.html")  # .dvc/config: plots.html_template = vega-offline.html

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <script>
@BUNDLE@
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def template_html() -> str:
    """The page, with the bundle that sets ``window.vegaEmbed``, ``vega`` and ``vegaLite`` inlined."""
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    for marker in ("</script", "{plot_divs}", "{refresh_tag}", "{scripts}"):
        if marker in bundle:  # would end the script element early, or be replaced by DVC
            raise ValueError(f"the Vega bundle contains '{marker}': it cannot be inlined as it is")
    return PAGE.replace("@BUNDLE@", bundle)


def png_name(plot_id: str) -> str:
    """``plots/train/ghost.csv`` -> ``train__ghost.png``: one flat folder, names that say which plot."""
    stem = plot_id.removeprefix("plots/").rsplit(".", 1)[0]
    return stem.replace("/", "__") + ".png"


def render_pngs(out="plots/png", revs: tuple[str, ...] = ()) -> list[Path]:
    """Each Vega plot DVC shows (of the workspace, or of ``revs`` overlaid) as ``out/<name>.png``."""
    import json
    import subprocess

    import vl_convert

    dvc = [sys.executable, "-m", "dvc"]  # this environment's DVC, activated or not
    cmd = [*dvc, "plots", "diff", *revs, "--json"] if revs else [*dvc, "plots", "show", "--json"]
    shown = subprocess.run(cmd, capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{shown.stderr[-2000:]}")
    out, written = Path(out), []
    out.mkdir(parents=True, exist_ok=True)
    for plot_id, renders in json.loads(shown.stdout)["data"].items():
        for r in renders:
            if r.get("type") == "vega":
                path = out / png_name(plot_id)
                path.write_bytes(vl_convert.vegalite_to_png(r["content"], scale=2))
                written.append(path)
    return written


def main():
    if "--png" in sys.argv[1:]:
        written = render_pngs(revs=tuple(a for a in sys.argv[1:] if a != "--png"))
        print(f"wrote {len(written)} PNGs in plots/png/ from the specs of dvc plots show")
        return
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    out = root / TEMPLATE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(template_html())
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB): dvc plots show / diff render offline")


if __name__ == "__main__":
    main()
