"""Atomic file output (write to a temporary name beside the target, then rename) and folder locks."""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import io
import json
import os
import tempfile
from typing import Any, Callable, Dict, Iterator, List

from scripts import BundleInputError

LOCK_FILE = ".lock"


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it succeeded."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix or os.path.basename(path))
    except OSError as error:
        raise BundleInputError(f"{path}: cannot be written ({error.strerror})") from None
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as error:  # full disk, file size limit, read-only or vanished folder: the old file stays
        if error.errno is None:
            raise
        raise BundleInputError(f"{path}: cannot be written ({error.strerror}); the previous version is kept") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json_in(folder: str | None, name: str) -> Any | None:
    """``folder/name`` as JSON, or None when there is no folder or no such file."""
    path = os.path.join(folder, name) if folder else ""
    if not path or not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


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


def atomic_write_csv(path: str, rows: List[Dict[str, Any]], fieldnames: List[str] | None = None) -> None:
    """Write dict rows (columns ``fieldnames``, or the first row's) as a CSV file atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames or list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


@contextlib.contextmanager
def folder_lock(folder: str, what: str) -> Iterator[None]:
    """Hold an exclusive lock (``fcntl.flock`` on ``folder/.lock``) while the block runs; another process that holds
    it makes this one stop with one line instead of interleaving its files. A folder that does not exist is not
    created (the caller reports it); under torchrun only rank 0 locks."""
    if not os.path.isdir(folder) or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    import fcntl

    handle = open(os.path.join(folder, LOCK_FILE), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise BundleInputError(
            f"{folder}: in use by another run ({LOCK_FILE} is locked); {what} not started: wait for the other run to "
            "end or choose another folder"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def locked(argument: str, what: str) -> Callable[[Callable], Callable]:
    """Decorator: run the function under :func:`folder_lock` of its argument ``argument`` (a folder path)."""

    def wrap(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with folder_lock(str(signature.bind(*args, **kwargs).arguments[argument]), what):
                return function(*args, **kwargs)

        return inner

    return wrap
