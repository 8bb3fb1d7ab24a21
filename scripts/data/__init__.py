"""Stage 0, data: the cohort contract and everything shared by the later stages.

Owns the cohort table reader and label derivation (``cohort``), the patient-level fold split and datalist
(``split``), clinical values as network input (``clinical``), the MNI grid and arterial-territory atlas
(``anatomy``), the territory-mask and vessel-box transforms (``territory_mask``, ``mni_box``), the mirror aligned
per hemisphere (``mirror_align``), anti-aliased resizing (``resize``), input checks (``volume_checks``, ``checks``)
and the cohort screening that excludes a refused patient (``screen``), DICOM studies (``dicom_study``: series rules,
the ITK reader), dataset caching (``cache``), the input profile (``profile``) and atomic file writes (``io``).
Imports only ``scripts`` (``BundleInputError``) and third-party libraries: every other stage may import it.
"""
