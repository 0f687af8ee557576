"""hrnet_core: plain PyTorch / NumPy / OpenCV building blocks of the HRNet family (no Ray, DVC or MLflow inside).

Data flow of one task: ``data`` (readers of the official layouts, transforms) -> ``codecs`` (targets <-> predictions)
-> ``models`` -> ``losses`` / ``codecs`` decode -> ``evaluation`` (metrics).
"""

__version__ = "0.1.0"
