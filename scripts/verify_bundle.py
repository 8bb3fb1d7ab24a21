"""Model-zoo checks in one command: ``python -m scripts.verify_bundle [--schema PATH]``.

Runs ``monai.bundle verify_metadata`` (against a local schema copy, no download), ``verify_net_in_out``
on ``network_def`` of ``configs/inference.json``, the style checks (isort, black, flake8 at line 120), and
checks the bundle files: LICENSE, docs/data_license.txt, docs/README.md sections, the changelog entry
of the current version, pins that agree with requirements*.txt (optional ones: optional_packages_version),
every ``large_files.yml`` entry complete, and no tracked file over 25 MB. Prints one line per check; exit
status 1 if any fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable, Dict, List, Tuple

import fire
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SCHEMA = os.path.join(ROOT, "..", "shared", "data", "monai", "meta_schema_20240725.json")
SECTIONS = (
    "Model Overview",
    "Data",
    "Preprocessing",
    "Training configuration",
    "Input",
    "Output",
    "Performance",
    "MONAI Bundle Commands",
    "References",
    "License",
)
CODE = ["scripts", "tests", "benchmarks"]


def _bundle(*args: str) -> Callable[[], Tuple[bool, str]]:
    def check() -> Tuple[bool, str]:
        result = subprocess.run(
            [sys.executable, "-m", "monai.bundle", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        tail = (result.stderr or result.stdout).strip().splitlines()
        return result.returncode == 0, "" if result.returncode == 0 else (tail[-1] if tail else "failed")

    return check


def _tool(*cmd: str) -> Callable[[], Tuple[bool, str]]:
    def check() -> Tuple[bool, str]:
        result = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True)
        out = (result.stdout + result.stderr).strip().splitlines()
        return result.returncode == 0, "" if result.returncode == 0 else "; ".join(out[:3])

    return check


def check_files() -> Tuple[bool, str]:
    """LICENSE, data licence, README sections, changelog, pins, large_files.yml, file sizes."""
    problems: List[str] = []
    for path in ("LICENSE", "docs/data_license.txt", "configs/metadata.json", "configs/logging.conf"):
        if not os.path.isfile(os.path.join(ROOT, path)):
            problems.append(f"{path} missing")
    readme = open(os.path.join(ROOT, "docs", "README.md")).read()
    problems += [f"docs/README.md has no '## {s}' section" for s in SECTIONS if f"\n## {s}\n" not in readme]
    meta = json.load(open(os.path.join(ROOT, "configs", "metadata.json")))
    if meta["version"] not in meta.get("changelog", {}):
        problems.append(f"changelog has no entry for version {meta['version']}")
    expected = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    expected.update(meta["required_packages_version"])
    optional: Dict[str, str] = {}
    for name in (
        "requirements.txt",
        "requirements-tracking.txt",
        "requirements-monailabel.txt",
        "requirements-deploy.txt",
        "requirements-cluster.txt",
    ):
        pins = dict(
            line.split("#")[0].strip().split("==")
            for line in open(os.path.join(ROOT, name))
            if line.split("#")[0].strip()
        )
        if name != "requirements.txt":
            optional.update(pins)
        elif pins != expected:
            problems.append(f"{name} and metadata pins differ: {sorted(set(pins.items()) ^ set(expected.items()))}")
    if optional != meta.get("optional_packages_version", {}):
        problems.append(f"optional requirements files and metadata optional_packages_version differ: {optional}")
    for entry in yaml.safe_load(open(os.path.join(ROOT, "models", "large_files.yml")))["large_files"]:
        missing = [k for k in ("path", "url", "hash_val", "hash_type") if not entry.get(k)]
        if missing:
            problems.append(f"large_files.yml entry {entry.get('path')} lacks {', '.join(missing)}")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    sizes = {f: os.path.getsize(os.path.join(ROOT, f)) for f in tracked if os.path.isfile(os.path.join(ROOT, f))}
    problems += [f"{f} is over 25 MB" for f, size in sizes.items() if size > 25e6]
    return not problems, "; ".join(problems)


def main(schema: str = DEFAULT_SCHEMA) -> None:
    """Run every check; exit 1 if any fails."""
    checks = {
        "verify_metadata": _bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", schema),
        "verify_net_in_out": _bundle(
            "verify_net_in_out",
            "--net_id",
            "network_def",
            "--meta_file",
            "configs/metadata.json",
            "--config_file",
            "configs/inference.json",
        ),
        "isort": _tool("isort", "--check-only", "--diff", *CODE),
        "black": _tool("black", "--check", *CODE),
        "flake8": _tool("flake8", *CODE),
        "bundle files": check_files,
    }
    failed = 0
    for name, check in checks.items():
        ok, detail = check()
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    fire.Fire(main)
