"""``python -m scripts.preprocess ct --ncct PATH [--cta PATH] --out DIR [--transform SyN] [--spacing 1]``."""

import json

import fire

from scripts.preprocess.ct import preprocess_ct


def ct(ncct: str, out: str, cta: str = "", transform: str = "Affine", spacing: float = 1.0) -> None:
    """Preprocess one CT patient (NCCT, optional CTA; NIfTI files or DICOM series folders) into ``out``."""
    print(json.dumps(preprocess_ct(ncct, out, cta or None, transform, spacing), indent=1))


if __name__ == "__main__":
    fire.Fire({"ct": ct})
