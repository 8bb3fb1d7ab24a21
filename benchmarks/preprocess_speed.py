"""Per-case wall time of preprocessing, by stage, on real anatomy at the default settings (1 mm MNI grid, affine).

python benchmarks/preprocess_speed.py [--repeats 3] [--syn true] [--threads 2]

CT case: the real head CT of Debian's invesalius-examples as NCCT plus a moved copy as CTA (256 x 256 x 108,
0.96 x 0.96 x 1.5 mm). MR case: the real stroke T2 (156 x 175 x 146, 1 mm) as b0, b1000 derived from it (ADC
computed) and a moved copy as FLAIR. Prints the median of ``repeats`` runs per stage and in total (write included).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import fire
import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.conftest import SHARED  # noqa: E402
from tests.real_ct import cranium_nifti, cta_standin  # noqa: E402


def _moved_copy(path: str, out: str, scale: float = 1.0) -> str:
    img = nib.load(path)
    affine = img.affine.copy()
    affine[:3, 3] += [6.0, -4.0, 3.0]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * scale, affine), out)
    return out


def _time(run, repeats: int):
    totals, stages = [], []
    for _ in range(repeats):
        out = tempfile.mkdtemp()
        start = time.time()
        qc = run(os.path.join(out, "case"))
        totals.append(time.time() - start)
        stages.append(qc["seconds"])
        shutil.rmtree(out)
    names = list(stages[0])
    return float(np.median(totals)), {n: float(np.median([s[n] for s in stages])) for n in names}


def main(repeats: int = 3, syn: bool = True, threads: int = 2) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    from scripts.preprocess.ct import preprocess_ct
    from scripts.preprocess.mr import preprocess_mr

    work = tempfile.mkdtemp()
    runs = {}
    ncct = cranium_nifti(os.path.join(work, "ncct.nii.gz"))
    if ncct is None:
        print("CT case skipped: apt-get install -y invesalius-examples")
    else:
        cta = cta_standin(ncct, os.path.join(work, "cta.nii.gz"))  # moved copy with contrast-filled vessels
        runs["CT NCCT+CTA, affine"] = lambda out: preprocess_ct(ncct, out, cta=cta)
        if syn:
            runs["CT NCCT+CTA, affine+SyN"] = lambda out: preprocess_ct(ncct, out, cta=cta, transform="SyN")
    t2 = os.path.join(SHARED, "cases", "T2.nii")
    b1000 = _moved_copy(t2, os.path.join(work, "b1000.nii.gz"), scale=0.45)
    nib.save(nib.Nifti1Image(np.asarray(nib.load(t2).dataobj) * 0.45, nib.load(t2).affine), b1000)
    flair = _moved_copy(t2, os.path.join(work, "flair.nii.gz"))
    runs["MR b0+b1000+ADC+FLAIR"] = lambda out: preprocess_mr(t2, out, b1000=b1000, flair=flair)
    print(f"threads {threads}, median of {repeats}")
    for name, run in runs.items():
        total, stages = _time(run, repeats)
        detail = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        print(f"{name}: {total:.1f} s ({detail}; rest = writing outputs and QC picture)")
    shutil.rmtree(work)


if __name__ == "__main__":
    fire.Fire(main)
