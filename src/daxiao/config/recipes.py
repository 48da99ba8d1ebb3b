"""Recipes: named, short diffs of the config, one reason per line (as nanoGPT's config files).

    daxiao train --data fashion-mnist --recipe speedrun          # >= 94 % test in <= 10 minutes on 2 cores
    daxiao train --data fashion-mnist --recipe speedrun --seed 1 # any setting can still be changed by a flag

Precedence: defaults < model defaults (registry) < recipe < --config YAML < flags. A run's config.yaml
records the recipe's name and every resolved value, so `--config` repeats it exactly. Every value here
was chosen on the validation split (90/10 of Fashion-MNIST's training set), never on the test set; the
measurements behind them are in benchmarks/speedrun.py and the README's "Speed" section.
"""

from __future__ import annotations

SPEEDRUN = {
    "model": "airnet",                 # airbench's conv-pool-BN-GELU groups, sized for a CPU (~25 M MACs at 28x28)
    "optimizer": "sgd",                # airbench: SGD with Nesterov momentum; BatchNorm makes the scale of lr forgiving
    "nesterov": True,
    "momentum": 0.85,                  # airbench's value: short runs want little gradient memory
    "lr": 0.5,                         # per mean-loss batch of 512; the 1/9 logit scale is why lr is this large
    "weight_decay": 1e-3,              # airbench's decay per step, expressed in torch's coupled form at this lr
    "schedule": "triangle",            # linear up from 0.2 x lr over 23 % of the steps, then linear down to 0.07 x lr
    "batch_size": 512,                 # near the best images/s a CPU gets; fewer steps of per-step overhead
    "epochs": 12,                      # what fits 10 minutes of 2 cores (~1.5-2k img/s) with evaluation and loading
    "loss": "label-smoothing=0.2",     # airbench: keeps logits from saturating; +0.3-0.5 % at this budget
    "augment": "horizontal_flip=true,width_shift_range=[0,1,2],height_shift_range=[0,1,2],fill_mode=reflect",
                                       # flip + translate by up to 2 px (airbench); clothes keep their class mirrored
    "lookahead": True,                 # airbench's lookahead/EMA of the weights: the end of the run is less noisy
    "tta": "flip",                     # test-time: average the logits of the image and its mirror
    "precision": "auto",               # bf16 only where this CPU measured it faster (AMX: yes; AVX2-only: no)
}

# The 30-minute tier: the same recipe, a wider net and three times the epochs.
SPEEDRUN_30 = {
    **SPEEDRUN,
    "alpha": 1.5,                      # widths 72-144-288: more capacity pays once there are epochs to use it
    "epochs": 16,                      # with 2.2x the MACs per image: ~3x the compute of the 10-minute recipe
    "tta": "flip-shift",               # mirror x (none, up-left, down-right): 6 views, worth it with more time
}

RECIPES: dict[str, dict] = {"speedrun": SPEEDRUN, "speedrun-30": SPEEDRUN_30}
