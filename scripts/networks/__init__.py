"""Networks of the bundle."""

from scripts.networks.mnt_dl import MNTDL, WithAuxiliaryLogits, mnt_dl_res25
from scripts.networks.scanet import SCANet

__all__ = ["MNTDL", "SCANet", "WithAuxiliaryLogits", "mnt_dl_res25"]
