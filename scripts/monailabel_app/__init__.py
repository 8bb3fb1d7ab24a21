"""A MONAI Label app serving this bundle's outcome prediction (see main.py and outcome_task.py)."""
