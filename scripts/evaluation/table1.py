"""The papers' Table 1: baseline characteristics by outcome group with the usual tests.

``python -m scripts.evaluation.table1 --cohort cohort.csv [--label fpe] [--out eval/table1]`` writes ``table1.md``
and ``table1.csv``. Per outcome group (label 1 / label 0) and overall:

- continuous variables as mean (SD) when both groups look normal (Shapiro-Wilk p >= 0.05), compared by Welch's
  t-test; otherwise median [IQR], compared by the Mann-Whitney U test;
- categorical variables as n (%) per level, compared by the chi-square test of
  independence (Yates-corrected for 2 x 2, scipy's default), or Fisher's exact
  test for a 2 x 2 table with an expected count below 5;
- missing values (blank cells) counted per variable and left out of that variable's test; a variable that no row
  records (an optional column the cohort does not have) is left out of the table.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

import fire
import numpy as np
from scipy import stats

from scripts.data.cohort import read_cohort
from scripts.data.io import atomic_write_csv, atomic_write_text

CONTINUOUS = (("age", "Age, years"), ("nihss", "NIHSS"), ("onset_to_imaging_min", "Onset to imaging, min"))
CATEGORICAL = (
    ("sex", "Sex"),
    ("location", "Occlusion site"),
    ("side", "Side"),
    ("ivt", "IV thrombolysis"),
    ("hypertension", "Hypertension"),
    ("diabetes", "Diabetes"),
    ("atrial_fibrillation", "Atrial fibrillation"),
    ("stenosis_gt50", "Stenosis > 50%"),
)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "") or (isinstance(v, float) and np.isnan(v))


def continuous_row(name: str, groups: Sequence[Sequence[float]]) -> Dict[str, Any]:
    """Summary and test of one continuous variable over (positive, negative) groups."""
    a, b = (np.asarray(g, dtype=float) for g in groups)
    if min(len(a), len(b)) < 2:  # a group without two values: summaries only, no test
        cells = [f"{np.median(g):.1f}" if len(g) else "-" for g in (a, b, np.r_[a, b])]
        summary = dict(zip(("positive", "negative", "all"), cells))
        return {"variable": name, "level": "median", **summary, "test": "", "p": float("nan")}
    normal = all(len(g) >= 3 and stats.shapiro(g).pvalue >= 0.05 for g in (a, b))
    if normal:
        cells = [f"{g.mean():.1f} ({g.std(ddof=1):.1f})" for g in (a, b, np.r_[a, b])]
        test, p = "Welch t-test", stats.ttest_ind(a, b, equal_var=False).pvalue
    else:
        cells = [
            f"{np.median(g):.1f} [{np.percentile(g, 25):.1f}-{np.percentile(g, 75):.1f}]" for g in (a, b, np.r_[a, b])
        ]
        test, p = "Mann-Whitney U", stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
    return {
        "variable": name,
        "level": "mean (SD)" if normal else "median [IQR]",
        "positive": cells[0],
        "negative": cells[1],
        "all": cells[2],
        "test": test,
        "p": float(p),
    }


def categorical_rows(name: str, groups: Sequence[Sequence[str]]) -> List[Dict[str, Any]]:
    """n (%) per level in each group and one test for the variable (on its first row)."""
    levels = sorted({str(v) for g in groups for v in g})
    table = np.array([[sum(str(v) == lev for v in g) for g in groups] for lev in levels])  # levels x 2
    if len(levels) < 2:
        test, p = "", float("nan")
    elif table.shape == (2, 2) and stats.contingency.expected_freq(table).min() < 5:
        test, p = "Fisher exact", float(stats.fisher_exact(table).pvalue)
    else:
        test, p = "chi-square", float(stats.chi2_contingency(table).pvalue)
    totals = table.sum(axis=0)
    rows = []
    for i, lev in enumerate(levels):
        n_all = int(table[i].sum())
        cells = [f"{int(table[i, j])} ({100 * table[i, j] / max(totals[j], 1):.1f}%)" for j in range(2)]
        rows.append(
            {
                "variable": name if i == 0 else "",
                "level": lev,
                "positive": cells[0],
                "negative": cells[1],
                "all": f"{n_all} ({100 * n_all / max(totals.sum(), 1):.1f}%)",
                "test": test if i == 0 else "",
                "p": p if i == 0 else float("nan"),
            }
        )
    return rows


def table1_rows(rows: List[Dict[str, Any]], label: str = "fpe") -> List[Dict[str, Any]]:
    """Table 1 rows for cohort rows (as :func:`scripts.data.cohort.read_cohort` returns them)."""
    counts = [str(sum(r[label] == c for r in rows)) for c in (1, 0)]
    out = [
        {
            "variable": "Patients",
            "level": "n",
            "positive": counts[0],
            "negative": counts[1],
            "all": str(len(rows)),
            "test": "",
            "p": float("nan"),
        }
    ]
    for key, name in CONTINUOUS + CATEGORICAL:
        present = [r for r in rows if key in r and not _missing(r[key])]
        if not present:  # an optional column the cohort does not record
            continue
        missing = len(rows) - len(present)
        groups = [[r[key] for r in present if r[label] == c] for c in (1, 0)]
        block = continuous_row(name, groups) if (key, name) in CONTINUOUS else categorical_rows(name, groups)
        block = [block] if isinstance(block, dict) else block
        if missing:
            block[0]["variable"] += f" (missing {missing})"
        out += block
    return out


def table1_markdown(rows: List[Dict[str, Any]], label: str) -> str:
    """The rows as a markdown table; p < 0.001 written as such."""
    lines = [
        f"Table 1 by {label} (positive = {label} 1).",
        "",
        f"| Variable | | {label} = 1 | {label} = 0 | All | Test | p |",
        "|---" * 7 + "|",
    ]
    for r in rows:
        p = "" if np.isnan(r["p"]) else ("<0.001" if r["p"] < 0.001 else f"{r['p']:.3f}")
        lines.append(
            f"| {r['variable']} | {r['level']} | {r['positive']} | {r['negative']} | {r['all']} | {r['test']} | {p} |"
        )
    return "\n".join(lines) + "\n"


def table1(cohort: str, label: str = "fpe", out: str = "eval/table1") -> str:
    """Write ``out/table1.md`` and ``out/table1.csv`` for a cohort CSV; return the markdown."""
    rows = table1_rows(read_cohort(cohort, check_files=False), label)
    text = table1_markdown(rows, label)
    atomic_write_csv(os.path.join(out, "table1.csv"), rows)
    atomic_write_text(os.path.join(out, "table1.md"), text)
    print(text)
    return text


if __name__ == "__main__":
    fire.Fire(table1)
