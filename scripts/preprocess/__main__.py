"""One patient from the command line (NIfTI files or DICOM series folders), written atomically to ``--out``:

``python -m scripts.preprocess ct --ncct PATH [--cta PATH] --out DIR [--transform SyN] [--spacing 1] [--vessels]``
``python -m scripts.preprocess mr --b0 PATH [--b1000 PATH] [--adc PATH] [--flair PATH] [--tmax PATH ...] --out DIR``
``python -m scripts.preprocess ct|mr --study DIR --out DIR [--series_rules FILE]``: a whole DICOM study folder as PACS
sends it; the series are chosen by ``configs/series_rules.json`` (:mod:`scripts.data.dicom_study`; CT: NCCT and CTA,
MR: b0 and what else the study has) and the choice is recorded in ``qc.json`` (``series``).

Bad input: one line on stderr naming the file and the cause, exit status 2 (``scripts`` excepthook).
"""

import json

import fire

from scripts import BundleInputError
from scripts.data.dicom_study import study_series
from scripts.preprocess.ct import preprocess_ct
from scripts.preprocess.mr import preprocess_mr


def ct(
    ncct: str = "",
    out: str = "",
    cta: str = "",
    transform: str = "Affine",
    spacing: float = 1.0,
    vessels: bool = False,
    study: str = "",
    series_rules: str = "",
) -> None:
    """Preprocess one CT patient (NCCT, optional CTA, optional CTA vessel map) into ``out``; prints the QC."""
    if not out or not (ncct or study):
        raise BundleInputError("preprocess ct: give --out and --ncct (and --cta) or --study")
    found, record = study_series(study, ("ncct", "cta"), series_rules or None) if study else ({}, None)
    ncct, cta = found.get("ncct", ncct), found.get("cta", cta)
    print(
        json.dumps(preprocess_ct(ncct, out, cta or None, transform, spacing, vessels=vessels, series=record), indent=1)
    )


def mr(
    b0: str = "",
    out: str = "",
    b1000: str = "",
    adc: str = "",
    flair: str = "",
    tmax: str = "",
    cbf: str = "",
    cbv: str = "",
    mtt: str = "",
    spacing: float = 1.0,
    histogram_reference: str = "",
    study: str = "",
    series_rules: str = "",
) -> None:
    """Preprocess one MR patient (DWI b0, optional b1000, ADC, FLAIR and perfusion maps) into ``out``."""
    if not out or not (b0 or study):
        raise BundleInputError("preprocess mr: give --out and --b0 (and the other sequences) or --study")
    keys, optional = ("b0", "b1000", "adc", "flair"), ("b1000", "adc", "flair")
    found, record = study_series(study, keys, series_rules or None, optional) if study else ({}, None)
    b0, b1000, adc, flair = (found.get(k, v) for k, v in (("b0", b0), ("b1000", b1000), ("adc", adc), ("flair", flair)))
    perfusion = {"tmax": tmax, "cbf": cbf, "cbv": cbv, "mtt": mtt}
    qc = preprocess_mr(
        b0,
        out,
        b1000 or None,
        adc or None,
        flair or None,
        perfusion,
        spacing,
        histogram_reference or None,
        series=record,
    )
    print(json.dumps(qc, indent=1))


if __name__ == "__main__":
    fire.Fire({"ct": ct, "mr": mr})
