"""Raw scans to model-ready MNI-space volumes (ANTsPy/ITK).

One patient: ``python -m scripts.preprocess ct|mr ...`` (:mod:`scripts.preprocess.ct`, :mod:`scripts.preprocess.mr`);
a cohort: ``python -m monai.bundle run preprocess --config_file configs/preprocess.json`` (:mod:`.cohort`).
"""
