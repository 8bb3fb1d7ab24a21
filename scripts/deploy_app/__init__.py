"""A MONAI Deploy application running the bundle's exported fold models (see app.py and export.py).

An app on top of the pipeline: may import every stage except ``scripts.demo``.
"""
