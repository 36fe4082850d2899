"""The evaluation report's pieces."""

from pipeline.report import Variant, markdown_table, pareto_front


def test_pareto_front_keeps_only_non_dominated_variants():
    pts = [("a", 1.0, 30.0), ("b", 2.0, 29.0), ("c", 2.0, 31.0), ("d", 0.5, 28.0), ("e", 3.0, 31.0)]
    assert sorted(pareto_front(pts)) == ["a", "c", "d"]


def test_markdown_table_has_a_row_per_variant_and_a_column_per_set():
    vs = [Variant("bicubic", scores={"Set5": {"psnr": 28.431, "ssim": 0.8113}}),
          Variant("net", None, 1.0, 1234, 2e9, 0.05, {"Set5": {"psnr": 30.0, "ssim": 0.85}})]
    table = markdown_table(vs, ["Set5"])
    lines = table.strip().splitlines()
    assert len(lines) == 4 and "Set5 PSNR / SSIM" in lines[0]
    assert "| net | 1,234 | 2.000 | 50 ms | 30.000 / 0.8500 |" in table
    assert "28.431 / 0.8113" in lines[2] and "| bicubic | 0 | 0.000 |  |" in lines[2]  # no latency for bicubic
