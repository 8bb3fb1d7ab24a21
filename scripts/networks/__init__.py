"""Networks of the bundle."""

from scripts.networks.mnt_dl import MNTDL, WithAuxiliaryLogits, mnt_dl_res25

__all__ = ["MNTDL", "WithAuxiliaryLogits", "mnt_dl_res25"]
