"""`daxiao tune`: an Optuna study over training settings, stored so it survives interruption.

Optuna does the searching (grid, random, TPE samplers), the pruning (median, successive halving,
Hyperband) and the storing (a journal file in the study folder by default: SQLite locks up under
parallel writers; any database URL Optuna accepts with --storage). This module wires them to
`cross_validate`, runs trials in one or several processes, and re-runs trials a crash cut off.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import socket
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from ..config import RunConfig
from ..console import console, escape
from ..errors import DaxiaoError, check_choice
from ..files import FolderLock, atomic_write, check_new_folder, next_free
from ..interrupt import begin, note_saved
from .cv import FoldCache, cross_validate
from .space import Param, apply_params, check_space, grid_size, parse_space
from .storage import HEARTBEAT_S, ClaimLock, fail_stale, heartbeat_on, open_storage

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "halving", "hyperband", "none")


@dataclass
class TuneSettings:
    """How to search; saved as tune.yaml in the study folder (with the base training config) for --resume."""

    space: dict = field(default_factory=dict)  # {name: "a,b" | "low:high[:log|:step]" | [values] | {low, high}}
    sampler: str = "tpe"        # grid | random | tpe
    trials: int | None = None   # None: the grid's size for grid, else 20
    cv: int = 3                 # stratified folds (the article's cv=3); 0: the data's hold-out validation split
    pruner: str = "median"      # median | halving | hyperband | none
    jobs: int = 1               # worker processes on this machine
    storage: str | None = None  # Optuna storage URL; None: a journal file in the study folder
    study: str | None = None    # study name in the storage; None: the study folder's name
    timeout: float | None = None  # minutes; no new trial starts after it
    heartbeat: int = HEARTBEAT_S  # database storages: seconds between a running trial's heartbeats; a trial
    #                               silent for twice that is failed and retried by another worker

    def n_trials(self, space: dict[str, Param]) -> int:
        return self.trials or (grid_size(space) if self.sampler == "grid" else 20)


# ---- sampler, pruner ---------------------------------------------------------------------------------------
def make_sampler(name: str, space: dict[str, Param], seed: int) -> optuna.samplers.BaseSampler:
    if name == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid_values() for p in space.values()}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, len(space) * 2)))


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """Pruners judge the running mean CV accuracy reported after every epoch (the step is the epoch)."""
    if name == "median":  # stop a trial whose best so far is below the median of others at that epoch
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "halving":  # rungs at epochs 1, 4, 16, 64; the best quarter of trials go on at each
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


def max_epochs(base: RunConfig, space: dict[str, Param]) -> int:
    p = space.get("epochs")
    if p is None:
        return base.train.epochs
    return int(max(p.choices) if p.choices is not None else p.high)


# ---- the objective ----------------------------------------------------------------------------------------
def suggest(trial: optuna.Trial, p: Param):
    if p.choices is not None:
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.integer:
        return trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)


def rss_mb() -> float:
    """This process's resident memory now (Linux), else its peak: trials.csv shows it stays flat."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _record(trial: optuna.Trial, r: dict) -> None:
    for k in ("acc", "std", "fold_acc", "epochs_run", "fold_epochs", "seconds"):
        trial.set_user_attr(k, r[k])
    trial.set_user_attr("rss_mb", round(rss_mb(), 1))  # after the trial's models were freed


WORKER = f"{socket.gethostname()}:{os.getpid()}"


def make_objective(base: RunConfig, space: dict[str, Param], cache: FoldCache):
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", WORKER)  # which machine and process: a shared study's trials come from many
        params = {name: suggest(trial, p) for name, p in space.items()}
        if (seen := _same_params(trial, params)) is not None:  # training is seeded: the result would not change
            return _reuse(trial, seen)
        cfg = apply_params(base, params).validate()
        folds = cache.folds(cfg)

        def report(epoch: int, acc: float) -> None:
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        try:
            r = cross_validate(cfg, folds, report)
        except optuna.TrialPruned as e:
            _record(trial, e.result)
            raise
        except Exception as e:  # recorded as failed (not cut off): --resume does not re-run it
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            if hasattr(e, "result"):
                _record(trial, e.result)
            raise
        _record(trial, r)
        return r["acc"]

    return objective


def _same_params(trial: optuna.Trial, params: dict) -> optuna.trial.FrozenTrial | None:
    """An earlier complete or pruned trial with exactly these values (TPE and random search on a space of
    choices draw repeats; a seeded trial would train the same model again)."""
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.params == params and "duplicate_of" not in t.user_attrs:
            return t
    return None


def _reuse(trial: optuna.Trial, seen: optuna.trial.FrozenTrial) -> float:
    for k in ("acc", "std", "fold_acc", "epochs_run"):
        trial.set_user_attr(k, seen.user_attrs.get(k))
    trial.set_user_attr("duplicate_of", seen.number)
    trial.set_user_attr("fold_epochs", 0)
    trial.set_user_attr("seconds", 0.0)
    if seen.state == TrialState.PRUNED:
        for step, v in seen.intermediate_values.items():
            trial.report(v, step)
        raise optuna.TrialPruned(f"same values as pruned trial {seen.number}")
    return seen.value


# ---- trial bookkeeping ------------------------------------------------------------------------------------
def counts_toward_budget(t: optuna.trial.FrozenTrial) -> bool:
    """Finished, running or queued trials count; a trial cut off by a crash or Ctrl-C does not (it is re-run)."""
    if t.state == TrialState.FAIL:
        return "error" in t.user_attrs
    return True


def requeue_cut_off(study: optuna.Study, space: dict[str, Param]) -> list[int]:
    """Mark trials left RUNNING by a killed process as failed and queue each cut-off trial's parameters
    again (once). Only for --resume: it assumes no other worker is running this study right now."""
    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    out = []
    for t in trials:
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        elif not (t.state == TrialState.FAIL and "error" not in t.user_attrs):
            continue
        if t.number not in rerun and set(t.params) == set(space):
            study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number}, skip_if_exists=False)
            out.append(t.number)
    return out


def print_trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    params = " ".join(f"{k}={v}" for k, v in t.params.items())
    a = t.user_attrs
    if t.state == TrialState.FAIL:
        what = f"[red]failed[/]: {a.get('error', 'interrupted')}"
    elif "duplicate_of" in a:
        what = f"[dim]same values as trial {a['duplicate_of']}: not trained again[/]"
    else:
        what = f"cv acc {a.get('acc', float('nan')):.4f} ± {a.get('std', float('nan')):.4f}"
        if t.state == TrialState.PRUNED:
            what += f" [yellow]pruned after {a.get('epochs_run', '?')} epochs[/]"
    console.print(f"trial {t.number:>3}  {params}  {what}  ({a.get('seconds', 0):.1f} s)", highlight=False)


# ---- running: one process or several ----------------------------------------------------------------------
def _work(base_dict: dict, settings_dict: dict, folder: str, worker: int, threads: int, deadline: float | None,
          verbose: bool, cache: FoldCache | None = None) -> None:
    """One worker: draw trials until the budget is spent, the grid is exhausted, or the deadline passes.
    In-process, `cache` holds the data `tune` already loaded; a spawned worker loads its own."""
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base, settings = RunConfig.from_dict(base_dict), TuneSettings(**settings_dict)
    space = parse_space(settings.space)
    storage = open_storage(settings.storage, Path(folder), settings.heartbeat)
    # Random and TPE workers must not draw the same sequence; grid workers must share one seed, as the grid's
    # order (trial number -> grid point) is shuffled by it.
    seed = base.train.seed + (0 if settings.sampler == "grid" else 1000 * worker)
    study = optuna.load_study(study_name=settings.study, storage=storage,
                              sampler=make_sampler(settings.sampler, space, seed),
                              pruner=make_pruner(settings.pruner, max_epochs(base, space)))
    objective, n = make_objective(base, space, cache or FoldCache(settings.cv)), settings.n_trials(space)
    def saved(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        _note_finished(study, Path(folder))

    callbacks = [print_trial, saved] if verbose else [saved]
    claim, beating = ClaimLock(settings.storage, Path(folder), settings.study), heartbeat_on(storage)

    def claimed(trial: optuna.Trial) -> float:  # the trial exists now: other workers may count and claim again
        claim.release()
        return objective(trial)

    while deadline is None or time.time() < deadline:
        claim.acquire()
        try:
            if beating:
                fail_stale(study)  # a killed worker's trial: failed, and queued again by the retry callback
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            spent = sum(counts_toward_budget(t) for t in trials) >= n or (
                settings.sampler == "grid" and study.sampler.is_exhausted(study))
            if spent and not waiting:
                if beating and any(t.state == TrialState.RUNNING for t in trials):
                    claim.release()  # other workers' trials still run: if one dies, its retry is ours to run
                    time.sleep(min(settings.heartbeat, 2))  # a query every 2 s: nothing for the database
                    continue
                break
            study.optimize(claimed, n_trials=1, catch=(Exception,), callbacks=callbacks)
        finally:
            claim.release()


def _worker_entry(*args) -> None:  # a spawned process: DaxiaoError and Ctrl-C end it quietly
    try:
        _work(*args)
    except KeyboardInterrupt:
        pass


def worker_threads(jobs: int, threads: int | None) -> int:
    """Threads per process so that jobs x threads <= cores: oversubscribed OpenMP threads made small
    ops 10-100x slower on this project's 2-core machines."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if jobs > cores:
        raise DaxiaoError(f"--jobs {jobs} is more than this machine's {cores} cores; use --jobs {cores} or fewer "
                          "(more workers only share the same cores), or join from other machines with --storage.")
    fair = max(1, cores // jobs)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # the user's own cap (e.g. other work on the machine)
        fair = max(1, min(fair, int(os.environ["OMP_NUM_THREADS"])))
    if threads and threads * jobs > cores:
        console.print(f"[yellow]--threads {threads} x --jobs {jobs} > {cores} cores; using {fair} thread(s) "
                      "per worker[/]")
        return fair
    return threads or fair


def recipe(settings: TuneSettings, space: dict[str, Param], base: RunConfig) -> dict:
    """What every worker of one study must share: the space, the search, and the base config (less where each
    machine keeps its files and how many threads it has)."""
    config = base.to_dict()
    for k in ("project", "name", "exist_ok", "resume"):
        config.pop(k, None)
    config["train"].pop("threads", None)
    r = {"space": {k: asdict(p) for k, p in space.items()}, "sampler": settings.sampler, "cv": settings.cv,
         "pruner": settings.pruner, "trials": settings.trials, "config": config}
    return json.loads(json.dumps(r))  # as the storage gives it back: tuples as lists


def join(study: optuna.Study, settings: TuneSettings, space: dict[str, Param], base: RunConfig) -> None:
    """Record the study's recipe (for --report on any machine), or check that this worker runs the same one."""
    mine = recipe(settings, space, base)
    theirs = study.user_attrs.get("daxiao_recipe")
    if theirs is None:
        study.set_user_attr("daxiao_recipe", mine)
        study.set_user_attr("daxiao_config", json.loads(json.dumps(base.to_dict())))
    elif theirs != mine:
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        raise DaxiaoError(f"Study {settings.study} in {settings.storage or 'the journal'} was started with other "
                          f"settings ({', '.join(diff)} differ); join it with the same command, or pass another "
                          "--study.")


def study_folder(base: RunConfig, resume: bool) -> Path:
    """runs/tune-<data>[-N], or --name; an existing folder needs --resume (continue) or --exist-ok."""
    project = Path(base.project)
    data = Path(base.data.data.rstrip("/")).stem
    if base.name is None and not resume:
        return next_free(project, f"tune-{data}", create=True)
    folder = project / (base.name or f"tune-{data}")
    if resume and not (folder / "tune.yaml").is_file():
        raise DaxiaoError(f"--resume: no study to resume at {folder} (no tune.yaml); pass --name of a study folder.")
    return check_new_folder(folder, resume or base.exist_ok, "Study folder",
                            "choose another --name, --resume to continue it, or --exist-ok to start a new study there")


def tune(base: RunConfig, settings: TuneSettings, verbose: bool = True) -> dict:
    """Run (or resume, with ``base.resume``) a study; write the leaderboard, trials.csv, best.yaml and plots.
    Interrupted (Ctrl-C, SIGTERM), it still writes trials.csv and best.yaml of the trials that finished.

    Returns {"folder", "best_params", "best_value", "trials" (count by state), "fold_epochs", "seconds"}.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own one line per trial instead
    folder = study_folder(base, base.resume)
    # One `daxiao tune` per study folder: a second gets one line (more workers: --jobs, or --storage from
    # another folder or machine), not two processes rewriting tune.yaml and trials.csv.
    with FolderLock(folder, "Study folder"):
        return _tune(base, settings, folder, verbose)


def _tune(base: RunConfig, settings: TuneSettings, folder: Path, verbose: bool) -> dict:
    from .report import write_outputs

    t0 = time.perf_counter()
    resume = base.resume
    if resume:  # the saved settings and base config win; a larger --trials extends the study, and --jobs and
        saved = yaml.safe_load((folder / "tune.yaml").read_text())  # --timeout are about this machine, now
        if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
            raise DaxiaoError(f"--resume: {folder / 'tune.yaml'} is empty or damaged; the trials are still in the "
                              "storage: start a study with the same --storage and --study to continue them.")
        now = settings
        base, settings = RunConfig.from_dict(saved["config"]), TuneSettings(**saved["settings"])
        settings.trials = max(now.trials or 0, settings.trials or 0) or None
        settings.jobs, settings.timeout = now.jobs, now.timeout
    elif base.exist_ok and settings.storage is None and (folder / "study.journal").exists():
        (folder / "study.journal").unlink()  # --exist-ok starts a new study in the folder, as train replaces a run
    base = copy.deepcopy(base)
    base.resume = base.exist_ok = False
    base.validate()
    check_choice("sampler", settings.sampler, SAMPLERS)
    check_choice("pruner", settings.pruner, PRUNERS)
    if settings.cv < 0 or settings.cv == 1:
        raise DaxiaoError(f"--cv must be 0 (hold-out) or at least 2 folds (received {settings.cv}).")
    if base.model.unfreeze:
        raise DaxiaoError("tune trains one stage per trial and does not run the two-stage --unfreeze recipe; tune "
                          "the head stage with --freeze-base, or fine-tune the whole model (no --freeze-base).")
    space = parse_space(settings.space)
    check_space(base, space)
    if settings.sampler == "grid":
        grid_size(space)  # ranges without steps cannot be gridded: say so now
    threads = worker_threads(settings.jobs, base.train.threads)
    cache = FoldCache(settings.cv)
    cache.folds(base)  # the data loads and the folds fit (--cv vs class sizes) before training
    settings.study = settings.study or folder.name
    folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(settings.storage, folder, settings.heartbeat)
    atomic_write(folder / "tune.yaml", yaml.safe_dump({"settings": asdict(settings), "config": base.to_dict()},
                                                      sort_keys=False))
    begin("study", folder)
    study = optuna.create_study(study_name=settings.study, storage=storage, direction="maximize",
                                load_if_exists=True)  # a worker on another machine may have created it first
    join(study, settings, space, base)
    if resume and heartbeat_on(storage):  # other workers may be running: fail only the trials that stopped beating
        fail_stale(study)
    elif resume and (rerun := requeue_cut_off(study, space)) and verbose:
        console.print(f"resuming {settings.study}: re-running cut-off trial(s) {', '.join(map(str, rerun))}")
    if verbose:
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        console.print(f"study [bold]{escape(settings.study)}[/] in {escape(str(folder))}: {settings.sampler} sampler, "
                      f"{settings.pruner} pruner, {'hold-out' if settings.cv == 0 else f'{settings.cv}-fold CV'}, "
                      f"{settings.n_trials(space)} trials ({done} finished before), {settings.jobs} worker(s) x "
                      f"{threads} thread(s)")
    deadline = time.time() + settings.timeout * 60 if settings.timeout else None
    trial_base = copy.deepcopy(base)
    trial_base.train.threads = threads
    args = (trial_base.to_dict(), asdict(settings), str(folder), 0, threads, deadline, verbose)
    _note_finished(study, folder)
    try:
        if settings.jobs == 1:
            _work(*args, cache=cache)
        else:
            ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked torch state
            procs = [ctx.Process(target=_worker_entry, args=(*args[:3], i, *args[4:])) for i in range(settings.jobs)]
            for p in procs:
                p.start()
            try:
                for p in procs:
                    p.join()
            except KeyboardInterrupt:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.join(10)
                raise
    except KeyboardInterrupt:  # what finished is stored; write its tables now, then let the CLI say how to resume
        study = optuna.load_study(study_name=settings.study, storage=storage)
        _note_finished(study, folder)
        write_outputs(study, space, base, folder, verbose=verbose)
        raise
    study = optuna.load_study(study_name=settings.study, storage=storage)
    summary = write_outputs(study, space, base, folder, verbose=verbose)
    return {**summary, "folder": str(folder), "seconds": time.perf_counter() - t0}


def _note_finished(study: optuna.Study, folder: Path) -> None:
    n = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    if n:
        note_saved(folder, f"{n} finished trial(s)")
