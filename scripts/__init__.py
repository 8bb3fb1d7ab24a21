"""Custom components of the thrombectomy-outcome bundle (referenced from configs/)."""

import logging
import os
import sys
import warnings
from types import TracebackType
from typing import Type


class BundleInputError(ValueError):
    """Bad user input (cohort table, datalist, paths): reported as one line, exit status 2."""


def find_input_error(exc: BaseException | None) -> BundleInputError | None:
    """The :class:`BundleInputError` that caused ``exc`` (itself, or along its cause/context chain), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BundleInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _input_error_hook(
    exc_type: Type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:  # pragma: no cover - exercised through subprocess tests
    found = find_input_error(exc)
    if found is None:
        _default_hook(exc_type, exc, tb)
        return
    print(f"error: {found}", file=sys.stderr)
    # leave without interpreter teardown: compiled extensions (ANTsPy's nanobind) report leaked objects at exit,
    # and the error line must stay the last line a user or a log scraper sees
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(2)


# holoscan (MONAI Deploy's runtime, imported by MONAI) warns about the thread stack size on every import; it is
# irrelevant to the bundle's CPU work and would be the first line of every error output
warnings.filterwarnings("ignore", message="Current stack size", category=RuntimeWarning)
# MONAI 1.6 builds its GPU DICOM decoder (nvImageCodec) with every default LoadImage and warns twice when it is
# absent, which it always is on CPU; DICOM series go through ITKReader here
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

_default_hook = sys.excepthook
sys.excepthook = _input_error_hook
