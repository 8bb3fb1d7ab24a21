"""Raw scans to model-ready MNI-space volumes (ANTsPy/ITK): ``python -m scripts.preprocess ct ...``.

So far the CT pipeline (:mod:`scripts.preprocess.ct`); the MR pipeline and the cohort-level config follow.
"""
