"""Stage 5, evaluation: honest k-fold metrics, baselines and model comparison.

Owns cut-offs from inner validation and metrics on outer folds and the test set (``evaluate``, run by
``configs/evaluate.json``), the radiomics baseline (``radiomics``) and the paper-style comparison table
(``compare``). May import every earlier stage (data, preprocess, networks, training, inference).
"""
