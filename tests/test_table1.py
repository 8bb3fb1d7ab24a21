"""Table 1: the summaries and p-values equal scipy's on small hand-made groups; missing cells are counted."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scripts.evaluation.table1 import categorical_rows, continuous_row, table1, table1_rows


def test_continuous_uses_t_test_for_normal_groups_and_mann_whitney_otherwise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(70, 10, 40), rng.normal(65, 10, 40)
    row = continuous_row("Age", [a, b])
    assert row["test"] == "Welch t-test" and row["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert row["positive"] == f"{a.mean():.1f} ({a.std(ddof=1):.1f})"
    skewed_a, skewed_b = rng.exponential(100, 40), rng.exponential(160, 40)
    row = continuous_row("Onset", [skewed_a, skewed_b])
    assert row["test"] == "Mann-Whitney U"
    assert row["p"] == pytest.approx(stats.mannwhitneyu(skewed_a, skewed_b, alternative="two-sided").pvalue)
    assert row["negative"].startswith(f"{np.median(skewed_b):.1f} [")


def test_categorical_uses_fisher_for_small_expected_counts_and_chi_square_otherwise():
    small = categorical_rows("IVT", [["1", "1", "0", "1"], ["0", "0", "0", "1", "0"]])
    assert small[0]["test"] == "Fisher exact"
    assert small[0]["p"] == pytest.approx(stats.fisher_exact([[1, 4], [3, 1]]).pvalue)  # rows: level 0, level 1
    assert [r["positive"] for r in small] == ["1 (25.0%)", "3 (75.0%)"]
    big = categorical_rows("Site", [["ICA"] * 10 + ["M1"] * 30 + ["M2"] * 20, ["ICA"] * 25 + ["M1"] * 25 + ["M2"] * 10])
    assert big[0]["test"] == "chi-square" and len(big) == 3
    assert big[0]["p"] == pytest.approx(stats.chi2_contingency([[10, 25], [30, 25], [20, 10]]).pvalue)


def test_missing_values_are_counted_and_left_out(demo_cohort, tmp_path):
    from scripts.data.cohort import read_cohort

    rows = read_cohort(demo_cohort, check_files=False)
    rows[0]["nihss"] = ""
    rows[1]["nihss"] = None
    table = table1_rows(rows, "fpe")
    nihss = next(r for r in table if r["variable"].startswith("NIHSS"))
    assert nihss["variable"] == "NIHSS (missing 2)"
    assert table[0]["all"] == str(len(rows))
    text = table1(demo_cohort, out=str(tmp_path))
    assert "| Occlusion site |" in text and (tmp_path / "table1.csv").read_text().startswith("variable,level,positive")
