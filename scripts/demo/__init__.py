"""Stage 6, demo: a simulated cohort with known truth and the main job that runs the bundle on it.

Owns the generator (``generator``: anatomy -> patients -> images, manifest with the truth), the refractory-LVO
truth (``rlvo``), scanner-space simulation (``scanner``) and the main job (``job``, ``python -m scripts.demo``),
which runs every stage as the ``monai.bundle`` command a user would type. May import every earlier stage;
nothing in the pipeline imports it.
"""
