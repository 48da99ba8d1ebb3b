"""`daxiao train --nproc N`: the same command, run by torchrun as N data-parallel processes.

    daxiao train --model seed-cnn --nproc 2 ...
    = torchrun --standalone --nproc-per-node 2 -m daxiao train --model seed-cnn ...

The settings are checked here first, so a typo is one line from this process, not N tracebacks and
torchrun's failure report. Several machines: run torchrun yourself on each, with its rendezvous flags
(README, "Scaling"); daxiao reads the job from torchrun's environment either way.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ..config import RunConfig
from ..errors import DaxiaoError
from ..files import LOCK_NAME, FolderLock


def forwarded(argv: list[str]) -> list[str]:
    """`argv` without --nproc N / --nproc=N: the command each process runs."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def torchrun_command(argv: list[str], nproc: int) -> list[str]:
    # torch.distributed.run is what the `torchrun` script runs; through this interpreter it is the same venv
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "daxiao", *forwarded(argv)]


def check_nproc(cfg: RunConfig, nproc: int) -> int:
    """Threads per process; refuses more processes than this machine's cores (or GPUs) can carry."""
    from ..training.distributed import cores
    from ..training.precision import resolve_device

    device = resolve_device(cfg.train.device)
    if device.type == "mps":
        raise DaxiaoError("--nproc: data-parallel training on MPS is not supported by PyTorch; train in one process.")
    if device.type == "cuda":
        import torch

        if device.index is not None:
            raise DaxiaoError(f"--nproc with --device {cfg.train.device}: each process takes cuda:LOCAL_RANK; "
                              "pass --device cuda.")
        if nproc > torch.cuda.device_count():
            raise DaxiaoError(f"--nproc {nproc} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                              "one process per GPU.")
    elif nproc > cores():
        raise DaxiaoError(f"--nproc {nproc} is more than this machine's {cores()} cores; use --nproc {cores()} or "
                          "fewer (more processes only share the same cores), or add machines with torchrun's "
                          "--nnodes (README, Scaling).")
    return max(1, cores() // nproc)


def launch(argv: list[str], cfg: RunConfig, nproc: int) -> int:
    """Run the train command under torchrun; returns its exit status."""
    from ..training.runs import run_folder

    cfg.validate()
    threads = check_nproc(cfg, nproc)
    run = run_folder(cfg)  # an existing --name (or nothing to --resume) is refused here, in one line
    if (run / LOCK_NAME).exists():  # a folder another process writes: one line here, not a failure per rank
        FolderLock(run, "Run folder").acquire().release()
    env = dict(os.environ)
    # torchrun would set OMP_NUM_THREADS=1 (one core per process); each process takes its share instead
    env.setdefault("OMP_NUM_THREADS", str(cfg.train.threads or threads))
    try:
        return subprocess.run(torchrun_command(argv, nproc), env=env).returncode
    except KeyboardInterrupt:  # torchrun passes Ctrl-C on to the processes; their last epoch is saved
        return 130
