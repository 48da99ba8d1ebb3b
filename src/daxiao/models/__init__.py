"""The model zoo: a registry, one file per family, the transfer head, and saved weights.

`daxiao.models.factory` imports each family file, which registers its models (see `registry`).
"""

from .factory import create_model, list_models, model_info
from .registry import ModelInfo, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
