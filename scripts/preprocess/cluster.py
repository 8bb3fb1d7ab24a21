"""Where preprocessing cases run: one Dask task per case (``distributed``).

- default: a ``LocalCluster`` on this machine, ``workers`` processes (0 = one per core) with one task each and the
  cores shared out as ITK threads;
- ``scheduler="tcp://HOST:PORT"``: an existing Dask cluster (``dask scheduler`` + ``dask worker`` on the nodes, or
  ``dask_jobqueue.SLURMCluster`` / ``PBSCluster``; docs/README.md, Preprocessing); its workers must import this
  bundle (started from the bundle root, or with it on ``PYTHONPATH``) and see the same paths;
- ``scheduler="serial"``: one case after another in this process (a single case always runs so).

The cohort runner (:func:`scripts.preprocess.cohort.run_cases`) does not submit cases whose folder already holds
``qc.json`` (every case folder is written atomically, so a run killed or cancelled half-way resumes with what is
missing). A case that fails, or whose worker dies, is marked
``failed`` with the cause and the others continue. A progress bar shows cases done, failed and the rate.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Dict, Iterator, Tuple

from tqdm import tqdm

logger = logging.getLogger(__name__)


def _with_threads(function: Callable, threads: int, *args: Any) -> Dict[str, Any]:
    """Run one case with ITK's thread count set for this worker process (0 = leave the worker's default)."""
    if threads > 0:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    return function(*args)


@contextlib.contextmanager
def _client(workers: int, scheduler: str | None, cases: int) -> Iterator[Tuple[Any, int]]:
    """(a Dask client, ITK threads per case): on ``scheduler``, or on a new LocalCluster that is closed with it
    (also on Ctrl-C: no worker outlives the run)."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client, 0
        return
    cores = os.cpu_count() or 1
    n = max(1, min(int(workers) if int(workers) > 0 else cores, cases))
    with LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        memory_limit=0,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        with Client(cluster) as client:
            yield client, max(1, cores // n)


def run_cases(
    case: Callable[..., Dict[str, Any]],
    jobs: Dict[str, tuple],
    workers: int = 0,
    scheduler: str | None = None,
) -> Dict[str, Dict[str, Any]]:
    """``case(*jobs[patient_id])`` for every patient (the function returns a QC dict with ``status`` and ``error``
    and never raises for a bad case); returns patient_id -> QC dict. Failures are logged as one line naming the
    patient."""
    results: Dict[str, Dict[str, Any]] = {}
    failed = 0
    bar = tqdm(total=len(jobs), unit="case", desc="preprocessing", dynamic_ncols=True, mininterval=1.0)

    def record(pid: str, qc: Dict[str, Any]) -> None:
        nonlocal failed
        results[pid] = qc
        if qc["status"] == "failed":
            failed += 1
            logger.error("%s: %s", pid, qc["error"])
        bar.update(1)
        bar.set_postfix(failed=failed, refresh=False)
        logger.info("preprocessed %d/%d (%s %s)", len(results), len(jobs), pid, qc["status"])

    try:
        if scheduler == "serial" or (len(jobs) == 1 and not scheduler):
            for pid, args in jobs.items():
                record(pid, case(*args))
            return results
        from distributed import as_completed

        logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO/WARNING lines would bury the progress
        with _client(workers, scheduler, len(jobs)) as (client, threads):
            futures = {
                client.submit(_with_threads, case, threads, *args, pure=False): pid for pid, args in jobs.items()
            }
            for future in as_completed(futures):
                pid = futures[future]
                try:
                    qc = future.result()
                except Exception as error:  # the worker died (out of memory, a crash in compiled code)
                    text = (str(error).strip().splitlines() or [""])[0][:200]
                    qc = {"status": "failed", "error": f"worker lost: {type(error).__name__}: {text}"}
                record(pid, qc)
        return results
    finally:
        bar.close()
