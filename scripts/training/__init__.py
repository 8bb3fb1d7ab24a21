"""Stage 3, training: the k-fold runner, the losses and SimSiam pretraining glue.

Owns fold selection, resume, best-checkpoint tracking and fold-model discovery (``kfold``), the record of a model
folder's configuration (``model_record``), crash-safe checkpoint writing (``checkpoint``), the deep-supervision and
SimSiam losses (``losses``), self-supervised pretraining (``pretraining``) and the training of the main job's
learned reader on generated cohorts' truth (``reading_net``). Run by ``configs/train.json`` and
``configs/pretrain.json``. May import ``scripts.data`` and ``scripts.networks``.
"""
