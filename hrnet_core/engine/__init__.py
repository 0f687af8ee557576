"""The training engine: pure PyTorch pieces of a run (no Ray, MLflow or DVC).

``hrnet_core.engine.evaluation`` is the one evaluation loop (optionally sharded over ranks) used by training-time
validation and ``hrnet evaluate``.
"""
