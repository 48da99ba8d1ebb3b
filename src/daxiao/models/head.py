"""The transfer-learning head, the seed article's 转移学习 model:

    ImageNet backbone (frozen) -> GlobalAveragePooling -> Dense(1024, relu) -> Dense(classes, softmax)

`TransferModel` puts a new head on any zoo model's pooled features (timm's ``forward_head(pre_logits=True)``,
which is the global average pool); `freeze_base` and `unfreeze` choose what trains. The recipe that
trains it in stages is `daxiao.training.transfer`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import DaxiaoError

HEAD_ARGS = ("head", "head_hidden", "head_dropout")  # create_model keywords that build a TransferModel


def make_head(kind: str, in_features: int, num_classes: int, hidden: int = 1024, dropout: float = 0.0) -> nn.Module:
    """The article's head, Dense(hidden, relu) -> Dropout -> Dense(classes), or a linear probe; the pooling
    before it is the backbone's own global average pool. Softmax lives in the loss, as elsewhere."""
    if num_classes == 0:
        return nn.Identity()
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


class TransferModel(nn.Module):
    """A backbone's pooled features followed by a new head, behind the zoo's interface.

    `forward` takes images; `classify` takes (B, num_features) features already computed by `features`
    (the feature cache trains the head through it).
    Modules listed in `frozen` stay in eval mode when the model trains: frozen layers run in inference
    mode, so BatchNorm neither updates its statistics nor normalizes with batch statistics.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, head: str = "article", head_hidden: int = 1024,
                 head_dropout: float = 0.0):
        super().__init__()
        backbone.reset_classifier(0)  # the backbone now ends at its pooled features
        self.backbone = backbone
        self.num_features = backbone.num_features
        self.head_kind, self.head_hidden, self.head_dropout = head, head_hidden, head_dropout
        self.reset_classifier(num_classes)
        self.pretrained_cfg = backbone.pretrained_cfg
        self.frozen: list[nn.Module] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> pooled backbone features (B, num_features): what the feature cache stores."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.backbone.forward_head(x, pre_logits=True)
        return x if pre_logits else self.head(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features) -> logits: the head alone."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def backbone_parameters(self):
        """The pretrained part: `build_optimizer` gives it lr x backbone_lr_scale (discriminative rates)."""
        return self.backbone.parameters()

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = make_head(self.head_kind, self.num_features, num_classes, self.head_hidden, self.head_dropout)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self


def with_head(model: nn.Module, num_classes: int | None = None, head: str = "article", head_hidden: int = 1024,
              head_dropout: float = 0.0) -> TransferModel:
    """`model` with its classifier replaced by `head` (see `make_head`); create_model calls this for ``head=``."""
    n = model.num_classes if num_classes is None else num_classes
    return TransferModel(model, n, head, head_hidden, head_dropout)


def resolve_head(m) -> str | None:
    """The head a model config asks for: --head, else the article's when the base is frozen at first."""
    return m.head or ("article" if m.freeze_base or m.unfreeze else None)


def head_kwargs(m) -> dict:
    """create_model keywords for the head of model config `m` (none: keep the model's own classifier)."""
    head = resolve_head(m)
    return {"head": head, "head_hidden": m.head_hidden, "head_dropout": m.head_dropout} if head else {}


# ---- freezing and unfreezing -----------------------------------------------------------------------------
def freeze_base(model: TransferModel) -> None:
    """Only the head trains; the whole backbone runs in inference mode."""
    model.backbone.requires_grad_(False)
    model.frozen = [model.backbone]


def backbone_blocks(backbone: nn.Module) -> list[list[str]]:
    """The backbone's parameter names grouped into blocks, input to output: timm's own grouping (each
    MBConv / residual block; the stem first, the final conv with the last block), else top-level children."""
    if hasattr(backbone, "group_matcher"):
        from timm.models import group_parameters

        return list(group_parameters(backbone, backbone.group_matcher(coarse=False)).values())
    groups: dict[str, list[str]] = {}
    for name, _ in backbone.named_parameters():
        groups.setdefault(name.split(".")[0], []).append(name)
    return list(groups.values())


def unfreeze(model: TransferModel, spec: str, freeze_bn: bool = True) -> int:
    """Make the whole backbone ("all") or its last N blocks ("last-N") trainable again.

    BatchNorm layers stay in inference mode where they are still frozen, and everywhere with `freeze_bn`:
    a fine-tuning batch of a few images would otherwise overwrite ImageNet's statistics.

    Returns:
        The number of backbone parameters that now train.
    """
    blocks = backbone_blocks(model.backbone)
    n = len(blocks) if spec == "all" else int(spec.split("-")[1])
    if n > len(blocks):
        raise DaxiaoError(f"--unfreeze {spec}: the backbone has only {len(blocks)} blocks; use last-{len(blocks)} "
                          "or all.")
    names = {name for block in blocks[-n:] for name in block}
    params = dict(model.backbone.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in names)
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.frozen = [m for m in norms if freeze_bn or not any(p.requires_grad for p in m.parameters())]
    return sum(params[name].numel() for name in names)
