"""Transfer learning's recipe, the seed article's 转移学习 and what comes after it, in up to two stages,
each one `fit`:

    head stage       base frozen, BatchNorm in inference mode (as Keras' trainable=False), --head-epochs;
                     with no augmentation the base's features are computed once (`daxiao.training.features`)
    fine-tune stage  --unfreeze all|last-N: the base's last N blocks train too, at lr x --backbone-lr-scale,
                     BatchNorm statistics still frozen (--freeze-bn), --finetune-epochs

The head model itself is `daxiao.models.head.TransferModel`. Cached features reach the same `fit` as a
`FeatureSplit`, so the run folder still holds the whole model (backbone and head).
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..config import RunConfig
from ..console import console
from ..data import DataBundle
from ..errors import DaxiaoError
from ..models.head import TransferModel, freeze_base, unfreeze
from .features import can_cache, feature_bundle
from .fit import fit


def train_transfer(model: TransferModel, bundle: DataBundle, cfg: RunConfig, run_dir: str | Path | None = None,
                   verbose: bool = True) -> dict:
    """The head stage, then (with --unfreeze) the fine-tuning stage; each stage is one `fit`.

    With both stages the head stage writes ``RUN/head/`` and fine-tuning writes ``RUN/``; with the head
    stage alone it writes ``RUN/``. Either way ``RUN/`` ends holding the whole model.

    Returns:
        The last stage's `fit` result; with two stages it carries the first's under ``"head_stage"``.
    """
    if not isinstance(model, TransferModel):
        raise DaxiaoError("Transfer training needs a model with a new head: create it with head='article' "
                          "or head='linear' (the CLI does so for --freeze-base and --unfreeze).")
    cfg = copy.deepcopy(cfg)
    t, m = cfg.train, cfg.model
    t.head_epochs = t.epochs if t.head_epochs is None else t.head_epochs  # explicit in config.yaml: repeatable
    t.finetune_epochs = t.epochs if t.finetune_epochs is None else t.finetune_epochs
    if m.unfreeze and cfg.resume:
        raise DaxiaoError("--resume does not continue a two-stage (--unfreeze) run yet; start a new run.")
    if not m.unfreeze and t.head_epochs == 0:
        raise DaxiaoError("--head-epochs 0 trains nothing without --unfreeze; give it at least 1.")
    run = Path(run_dir) if run_dir else None
    result: dict = {}
    if t.head_epochs:
        freeze_base(model)
        data = feature_bundle(model, bundle, cfg, verbose) if can_cache(cfg) else bundle
        head_run = (run / "head" if m.unfreeze else run) if run else None
        result = dict(fit(model, data, cfg=cfg, run_dir=head_run, verbose=verbose, epochs=t.head_epochs))
    if m.unfreeze:
        n = unfreeze(model, m.unfreeze, m.freeze_bn)
        if verbose:
            console.print(f"fine-tuning: {n:,} backbone parameters unfrozen ({m.unfreeze}) at lr x "
                          f"{cfg.optim.backbone_lr_scale}, BatchNorm statistics {'frozen' if m.freeze_bn else 'live'}")
        head_stage = result
        result = dict(fit(model, bundle, cfg=cfg, run_dir=run, verbose=verbose, epochs=t.finetune_epochs))
        result["head_stage"] = head_stage
    return result
