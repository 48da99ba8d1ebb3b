"""The model zoo. Importing a family module registers its models (see `daxiao.registry`)."""

from . import mobilenet_v1, seed_cnn, squeezenet, timm_zoo  # noqa: F401
