"""Cost as the cohort grows: training memory and epoch time with the RAM vs the disk cache, and preprocessing
throughput on the Dask LocalCluster.

python benchmarks/scale.py train --cohort C.csv --sizes 100,500,2000 --out DIR [--epochs 2]
    The first N patients of a demo cohort (CT, demo grid), split (5 folds), fold 0 of the README main job's
    configuration trained for ``epochs`` in a fresh process per (size, cache): ``dataset_cache`` ram
    (``CacheDataset``) vs disk (``PersistentDataset``). Prints the process's peak RSS, the time to build the
    datasets (the RAM cache fills here) and each epoch's time (the disk cache fills in epoch 1).
python benchmarks/scale.py preprocess --cases 40 --workers 1,2 --out DIR [--spacing 2]
    A native-space demo cohort (random pose, thick slices, headrest) preprocessed to the MNI grid by
    ``configs/preprocess.json`` with 1 and 2 workers on the LocalCluster: wall time with the cluster's start, cases
    per minute in total and per worker.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import time

import fire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIGS = [
    "train.json",
    "demo.json",
    "experiments/vessel.json",
    "experiments/vessel_mask.json",
    "experiments/select_log_loss.json",
]


def _subset(cohort: str, size: int, out: str) -> str:
    """The first ``size`` rows of ``cohort`` (image paths made absolute) and its 5-fold datalist; returns the latter."""
    from scripts.data.split import write_datalist

    base = os.path.dirname(os.path.abspath(cohort))
    with open(cohort, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [r for _, r in zip(range(size), reader)]
    for row in rows:
        for key in ("ncct", "cta"):
            row[key] = os.path.join(base, row[key])
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "cohort.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return write_datalist(path, os.path.join(out, "datalist.json"), folds=5, seed=0)


def fold(datalist: str, cache: str, cache_dir: str, ckpt: str, epochs: int = 2) -> None:
    """(child process) Train fold 0 for ``epochs``; print a JSON line of peak RSS and times."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    os.chdir(ROOT)
    start = time.perf_counter()
    wf = ConfigWorkflow(
        config_file=[os.path.join("configs", n) for n in CONFIGS],
        meta_file="configs/metadata.json",
        logging_file="configs/logging.conf",
        workflow_type="train",
        run_id="train_fold",
        datalist_file=datalist,
        dataset_dir=os.path.dirname(datalist),
        ckpt_dir=ckpt,
        fold=0,
        max_epochs=epochs,
        patience=epochs + 1,
        dataset_cache=cache,
        cache_dir=cache_dir,
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")  # builds both datasets (the RAM cache fills here)
    setup = time.perf_counter() - start
    marks, epoch_s = [time.perf_counter()], []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: marks.append(time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epoch_s.append(time.perf_counter() - marks[-1]))
    wf.run()
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    patients = len(wf.parser.get_parsed_content("train#dataset")) + len(
        wf.parser.get_parsed_content("validate#dataset")
    )
    print(
        json.dumps(
            {
                "setup_s": round(setup, 1),
                "epoch_s": [round(s, 1) for s in epoch_s],
                "peak_rss_gb": round(rss_gb, 2),
                "patients": patients,
            }
        )
    )


def train(
    cohort: str, sizes: str = "100,500,2000", out: str = "/tmp/scale/train", epochs: int = 2, caches: str = "ram,disk"
) -> None:
    """Print peak RSS and epoch times per cohort size and cache."""
    for size in map(int, _items(sizes)):
        datalist = _subset(cohort, size, os.path.join(out, f"n{size}"))
        for cache in _items(caches):
            run = os.path.join(out, f"n{size}", cache)
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "fold",
                "--datalist",
                datalist,
                "--cache",
                cache,
                "--cache_dir",
                os.path.join(run, "cache"),
                "--ckpt",
                os.path.join(run, "models"),
                "--epochs",
                str(epochs),
            ]
            start = time.perf_counter()
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode:
                print(result.stderr[-3000:])
                raise SystemExit(f"n={size} {cache}: failed")
            row = json.loads(result.stdout.strip().splitlines()[-1])
            cache_mb = _folder_mb(os.path.join(run, "cache"))
            print(
                f"n={size} cache={cache}: fold-0 patients {row['patients']}, peak RSS {row['peak_rss_gb']:.2f} GB, "
                f"datasets built in {row['setup_s']:.1f} s, epochs {row['epoch_s']} s, cache folder "
                f"{cache_mb:.0f} MB, process wall {time.perf_counter() - start:.0f} s",
                flush=True,
            )


def _items(values: str | int | tuple) -> list[str]:
    """``--sizes 100,500`` arrives from fire as a tuple, ``--sizes 100`` as an int, ``--caches disk`` as a str."""
    return [str(v) for v in (values if isinstance(values, (tuple, list)) else str(values).split(","))]


def _folder_mb(folder: str) -> float:
    if not os.path.isdir(folder):
        return 0.0
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 1024**2


def preprocess(
    cases: int = 40, workers: str = "1,2", out: str = "/tmp/scale/preprocess", spacing: float = 2.0, seed: int = 31
) -> None:
    """Print preprocessing wall time and throughput per worker count."""
    from scripts.demo.generator import generate

    cohort = generate(
        os.path.join(out, "raw"), patients=max(20, int(cases)), seed=seed, modalities="ct", spacing=spacing, native=True
    )
    table = _subset(cohort, int(cases), os.path.join(out, "subset"))
    table = os.path.join(os.path.dirname(table), "cohort.csv")
    for n in map(int, _items(workers)):
        target = os.path.join(out, f"workers{n}")
        cmd = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "preprocess",
            "--config_file",
            "configs/preprocess.json",
            "--cohort",
            table,
            "--output_dir",
            target,
            "--spacing",
            str(spacing),
            "--workers",
            str(n),
        ]
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode:
            print(result.stderr[-3000:])
            raise SystemExit(f"workers={n}: failed")
        with open(os.path.join(target, "qc_ct.csv")) as f:
            rows = list(csv.DictReader(f))
        ok = sum(r["status"] == "ok" for r in rows)
        per_case = sum(float(r["seconds"]) for r in rows) / len(rows)
        print(
            f"workers={n}: {ok}/{len(rows)} cases ok in {wall:.0f} s wall (cluster start and process start "
            f"included): {60 * len(rows) / wall:.1f} cases/min, {60 * len(rows) / wall / n:.1f} per worker; "
            f"{per_case:.1f} s per case inside the worker",
            flush=True,
        )


if __name__ == "__main__":
    fire.Fire({"train": train, "fold": fold, "preprocess": preprocess})
