"""Custom components of the thrombectomy-outcome bundle (referenced from configs/)."""

import sys
from types import TracebackType
from typing import Optional, Type


class BundleInputError(ValueError):
    """Bad user input (cohort table, datalist, paths): reported as one line, exit status 2."""


def _find_input_error(exc: Optional[BaseException]) -> Optional[BundleInputError]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BundleInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _input_error_hook(
    exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]
) -> None:  # pragma: no cover - exercised through subprocess tests
    found = _find_input_error(exc)
    if found is None:
        _default_hook(exc_type, exc, tb)
        return
    print(f"error: {found}", file=sys.stderr)
    sys.exit(2)


_default_hook = sys.excepthook
sys.excepthook = _input_error_hook
