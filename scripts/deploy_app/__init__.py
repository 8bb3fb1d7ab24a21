"""A MONAI Deploy application running the bundle's exported fold models (see app.py and export.py)."""
