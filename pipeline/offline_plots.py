"""The HTML template of ``dvc plots show`` / ``dvc plots diff`` with Vega, Vega-Lite and vega-embed
inlined, so that the page renders with no network (a cluster node, a laptop offline): DVC's own page
loads them from a CDN and stays blank there.

    python -m pipeline.offline_plots        # writes .dvc/vega-offline.html (scripts/setup.sh runs it)

The JavaScript is vl-convert-python's bundle of the three libraries (``javascript_bundle()``: a
maintained package, pinned in pyproject.toml), not a hand-kept copy; ``.dvc/config`` names the file as
``plots.html_template``. The page keeps DVC's placeholders (``{plot_divs}``, ``{refresh_tag}``) and drops
``{scripts}``, where DVC would put its CDN tags.
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


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    out = root / TEMPLATE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(template_html())
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB): dvc plots show / diff render offline")


if __name__ == "__main__":
    main()
