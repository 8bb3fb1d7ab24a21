"""Atomic file output: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from typing import Any, Callable, Dict, List


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it succeeded."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix or os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)

    atomic_write(path, _write)


def atomic_write_text(path: str, text: str) -> None:
    """Write a text file atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, _write)


def atomic_write_csv(path: str, rows: List[Dict[str, Any]]) -> None:
    """Write dict rows (columns from the first row) as a CSV file atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
