"""Stage 4, inference: fold-ensemble predictions and their explanations.

Owns the model-over-dataset prediction loop and the ensemble at the stored cut-off (``predict``, run by
``configs/inference.json`` and ``configs/inference_raw.json``) and explanations (``explain``: slice importance,
occlusion saliency, territory shares). May import ``scripts.data``, ``scripts.preprocess``, ``scripts.networks``
and ``scripts.training``.
"""
