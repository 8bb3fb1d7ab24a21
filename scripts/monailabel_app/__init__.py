"""A MONAI Label app serving this bundle's outcome prediction (see main.py and outcome_task.py).

An app on top of the pipeline: may import every stage except ``scripts.demo``.
"""
