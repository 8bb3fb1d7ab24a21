"""One patient from the command line (NIfTI files or DICOM series folders), written atomically to ``--out``:

``python -m scripts.preprocess ct --ncct PATH [--cta PATH] --out DIR [--transform SyN] [--spacing 1] [--vessels]``
``python -m scripts.preprocess mr --b0 PATH [--b1000 PATH] [--adc PATH] [--flair PATH] [--tmax PATH ...] --out DIR``

Bad input: one line on stderr naming the file and the cause, exit status 2 (``scripts`` excepthook).
"""

import json

import fire

from scripts.preprocess.ct import preprocess_ct
from scripts.preprocess.mr import preprocess_mr


def ct(
    ncct: str, out: str, cta: str = "", transform: str = "Affine", spacing: float = 1.0, vessels: bool = False
) -> None:
    """Preprocess one CT patient (NCCT, optional CTA, optional CTA vessel map) into ``out``; prints the QC."""
    print(json.dumps(preprocess_ct(ncct, out, cta or None, transform, spacing, vessels=vessels), indent=1))


def mr(
    b0: str,
    out: str,
    b1000: str = "",
    adc: str = "",
    flair: str = "",
    tmax: str = "",
    cbf: str = "",
    cbv: str = "",
    mtt: str = "",
    spacing: float = 1.0,
    histogram_reference: str = "",
) -> None:
    """Preprocess one MR patient (DWI b0, optional b1000, ADC, FLAIR and perfusion maps) into ``out``."""
    perfusion = {"tmax": tmax, "cbf": cbf, "cbv": cbv, "mtt": mtt}
    qc = preprocess_mr(
        b0, out, b1000 or None, adc or None, flair or None, perfusion, spacing, histogram_reference or None
    )
    print(json.dumps(qc, indent=1))


if __name__ == "__main__":
    fire.Fire({"ct": ct, "mr": mr})
