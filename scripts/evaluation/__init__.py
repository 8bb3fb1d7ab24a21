"""Stage 5, evaluation: honest k-fold metrics, baselines and model comparison.

Owns cut-offs from inner validation and metrics on outer folds and the test set (``evaluate``, run by
``configs/evaluate.json``), the statistics behind them (``statistics``: bootstrap CIs, calibration, DeLong, net
benefit, Platt), Table 1 (``table1``), the radiomics and clinical-only baselines (``radiomics``,
``clinical_baseline``) and the paper-style comparison table with DeLong's test (``compare``).
May import every earlier stage (data, preprocess, networks, training, inference).
"""
