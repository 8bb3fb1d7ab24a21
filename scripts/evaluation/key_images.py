"""The evaluation report's key images: the test patients the fold ensemble was most and least sure of, each with the
image a reader checks the main job's clot reading on (:meth:`scripts.networks.clot_readings.ClotReadingNet.key_views`:
the occluded half's iodine projection beside its aligned mirror's, the measured clot in red)."""

from __future__ import annotations

import csv
import os
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from scripts.data.io import atomic_write_text
from scripts.inference.measurements import KEY_IMAGES, write_key_image
from scripts.inference.predict import predict_many


def confidence_extremes(rows: Sequence[Dict[str, Any]], count: int = 5) -> Dict[str, List[Dict[str, Any]]]:
    """The test set's fold-ensemble rows of ``predictions.csv`` with the probability furthest from the cut-off
    (``most``, furthest first) and nearest to it (``least``, nearest first); a patient is in one list only."""
    ensemble = [r for r in rows if r["set"] == "test" and str(r["fold"]) == "ensemble"]
    ranked = sorted(ensemble, key=lambda r: -abs(float(r["probability"]) - float(r["cutoff"])))
    most = ranked[: min(count, len(ranked) // 2)]
    least = ranked[len(most) :][::-1][:count]
    return {"most": most, "least": least}


def add_key_images(
    network: torch.nn.Module, data: torch.utils.data.Dataset, index: Dict[str, int], output_dir: str, device: Any
) -> None:
    """Write ``output_dir/key_images/<patient_id>.png`` of the five most and least confident test patients and add
    the section on them to ``output_dir/report.md`` (nothing when the network draws no key image or there is no test
    set).

    Args:
        network: the configured network (``key_views``: fixed readings, no fold weights).
        data: the evaluation's preprocessed patients.
        index: patient_id -> position in ``data``.
        output_dir: the evaluation's output folder (its ``predictions.csv`` and ``report.md`` already written).
        device: the torch device.
    """
    if not hasattr(network, "key_views"):
        return
    with open(os.path.join(output_dir, "predictions.csv")) as f:
        extremes = confidence_extremes(list(csv.DictReader(f)))
    chosen = extremes["most"] + extremes["least"]
    if not chosen:
        return
    views: List[np.ndarray] = []
    subset = torch.utils.data.Subset(data, [index[r["patient_id"]] for r in chosen])
    predict_many([network], subset, device, readouts={"key_views": views})
    for row, view in zip(chosen, views):
        write_key_image(os.path.join(output_dir, KEY_IMAGES, f"{row['patient_id']}.png"), view)
    lines = [
        "## Key images",
        "",
        "The test patients the fold ensemble was most and least sure of (probability furthest from and nearest to the "
        f"cut-off {float(chosen[0]['cutoff']):.3f}): the occluded half's iodine projection (CTA minus NCCT) beside its "
        "aligned mirror's, anterior at the top, the clot the measurements were read on in red.",
        "",
    ]
    for name, rows in (("Most confident", extremes["most"]), ("Least confident", extremes["least"])):
        lines += [f"### {name}", "", "| patient | probability | label | key image |", "|---|---|---|---|"]
        for r in rows:
            image = f"![{r['patient_id']}]({KEY_IMAGES}/{r['patient_id']}.png)"
            lines.append(f"| {r['patient_id']} | {float(r['probability']):.3f} | {r['label']} | {image} |")
        lines.append("")
    report = os.path.join(output_dir, "report.md")
    with open(report) as f:
        atomic_write_text(report, f.read() + "\n".join(lines))
