"""Stage 1, preprocess: raw scans to model-ready MNI-space volumes (ANTsPy/ITK), and the CTA vessel map.

One patient: ``python -m scripts.preprocess ct|mr ...`` (:mod:`scripts.preprocess.ct`, :mod:`scripts.preprocess.mr`);
a cohort: ``python -m monai.bundle run preprocess --config_file configs/preprocess.json`` (:mod:`.cohort`).
May import ``scripts.data`` only.
"""
