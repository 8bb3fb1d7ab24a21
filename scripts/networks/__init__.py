"""Stage 2, networks: the models, each a ``torch.nn.Module`` with its tensor shapes in its docstring.

Owns the main job's ClotReadingNet (``clot_readings``) and its learned reader (``reading_net``), MNT-DL (``mnt_dl``, the
non-local block), SCANet, SlabNet (``slab_net``), VesselMaskNet (``vessel_mask``), the multimodal fusion networks
(``multimodal``, ``daft``, ``tabular``), the SimSiam wrapper and reduced-precision forward passes (``precision``). Built
by ``network_def`` in ``configs/inference.json`` and its overlays. May import ``scripts.data`` (clinical column specs)
only.
"""

from scripts.networks import precision
from scripts.networks.mnt_dl import MNTDL, WithAuxiliaryLogits, mnt_dl_res25
from scripts.networks.scanet import SCANet

__all__ = ["MNTDL", "SCANet", "WithAuxiliaryLogits", "mnt_dl_res25", "precision"]
