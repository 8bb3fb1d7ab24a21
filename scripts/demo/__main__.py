"""``python -m scripts.demo``: the main job on the built-in demo cohort (see :mod:`scripts.demo.job`)."""

import fire

from scripts.demo.job import main

fire.Fire(main)
