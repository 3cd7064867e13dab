"""End-to-end workflows built from the library: the main job (``pipeline``), the quick
sample report (``sample``), hardware-image export (``export``), the error budget
(``budget``) and report helpers (``report``)."""
