"""What a study leaves behind: a leaderboard in the terminal, trials.csv, best.yaml (a config `daxiao train
--config best.yaml` runs as is) and Optuna's plots as PNG."""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.table import Table

from ..config import RunConfig, save_yaml
from ..console import console, escape
from ..files import atomic_write
from .space import Param, apply_params

# Leaderboards are wide: in a log file (not a terminal) give them room rather than wrapping every cell.
CSV_FIELDS = ["trial", "state", "cv_acc", "cv_std", "epochs_run", "fold_epochs", "seconds", "fold_acc", "rss_mb",
              "rerun_of", "duplicate_of", "error"]


def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per trial that ran (queued ones are left out), best first; pruned and failed after complete."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.WAITING, TrialState.RUNNING):
            continue
        a = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name.lower(), **{f"param_{k}": v for k, v in t.params.items()},
                     "cv_acc": a.get("acc", math.nan), "cv_std": a.get("std", math.nan),
                     "epochs_run": a.get("epochs_run", 0), "fold_epochs": a.get("fold_epochs", 0),
                     "seconds": a.get("seconds", 0.0), "fold_acc": " ".join(f"{x:.4f}" for x in a.get("fold_acc", [])),
                     "rss_mb": a.get("rss_mb", ""), "rerun_of": a.get("rerun_of", ""),
                     "duplicate_of": a.get("duplicate_of", ""), "error": a.get("error", "")})
    order = {"complete": 0, "pruned": 1, "fail": 2}
    rows.sort(key=lambda r: (order.get(r["state"], 3), -(r["cv_acc"] if r["cv_acc"] == r["cv_acc"] else -1)))
    return rows


def write_csv(rows: list[dict], space: dict[str, Param], path: Path) -> None:
    fields = CSV_FIELDS[:2] + [f"param_{k}" for k in space] + CSV_FIELDS[2:]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write(path, buf.getvalue())


def leaderboard(rows: list[dict], space: dict[str, Param], title: str, top: int = 15) -> Table:
    table = Table(title=title)
    for col in ("trial", *space, "cv acc", "epochs run", "state", "time"):
        table.add_column(col, justify="right" if col in ("trial", "cv acc", "epochs run", "time") else "left",
                         no_wrap=True)
    for r in rows[:top]:
        acc = "" if r["cv_acc"] != r["cv_acc"] else f"{r['cv_acc']:.4f} ± {r['cv_std']:.4f}"
        state = {"complete": "[green]complete[/]", "pruned": "[yellow]pruned[/]"}.get(r["state"], "[red]failed[/]")
        table.add_row(str(r["trial"]), *(str(r.get(f"param_{k}", "")) for k in space), acc, str(r["epochs_run"]),
                      state, f"{r['seconds']:.1f} s")
    if len(rows) > top:
        table.caption = f"top {top} of {len(rows)} trials; all of them in trials.csv"
    return table


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimization history, parameter importances and parallel coordinates (Optuna's matplotlib plots).
    A plot that needs more finished trials than there are is skipped, with the reason."""
    import matplotlib.pyplot as plt  # Optuna draws through pyplot; it falls back to Agg without a display
    from optuna.visualization import matplotlib as ovm

    written = []
    for name, fn in (("history", ovm.plot_optimization_history), ("importance", ovm.plot_param_importances),
                     ("parallel", ovm.plot_parallel_coordinate)):
        path = folder / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
            first = ax.flat[0] if hasattr(ax, "flat") else ax
            if name == "history":
                first.set_ylabel("mean CV accuracy")
            fig = first.get_figure()
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            written.append(path)
        except Exception as e:  # e.g. importances need >= 2 completed trials that differ
            console.print(f"[dim]no {name}.png: {str(e).splitlines()[0] if str(e) else type(e).__name__}[/]")
        finally:
            plt.close("all")
    return written


def write_outputs(study: optuna.Study, space: dict[str, Param], base: RunConfig, folder: Path,
                  verbose: bool = True) -> dict:
    rows = trial_rows(study)
    write_csv(rows, space, folder / "trials.csv")
    states = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail")}
    out = {"trials": states, "fold_epochs": sum(r["fold_epochs"] for r in rows), "files": [folder / "trials.csv"]}
    complete = [r for r in rows if r["state"] == "complete"]
    if complete:
        best = study.best_trial
        cfg = apply_params(base, best.params)
        cfg.train.threads, cfg.name = base.train.threads, None
        save_yaml(cfg, folder / "best.yaml")
        out.update(best_trial=best.number, best_params=dict(best.params), best_value=best.value,
                   best_std=best.user_attrs.get("std"))
        out["files"].append(folder / "best.yaml")
    out["files"] += save_plots(study, folder) if complete else []
    if verbose:
        title = (f"{study.study_name}: {states['complete']} complete, {states['pruned']} pruned, "
                 f"{states['fail']} failed; {out['fold_epochs']} fold-epochs")
        console.print(leaderboard(rows, space, title))
        if complete:
            console.print(f"best: trial {out['best_trial']}, cv acc {out['best_value']:.4f}, "
                          + " ".join(f"{k}={v}" for k, v in out["best_params"].items()))
            console.print(f"train it: [bold]daxiao train --config {escape(str(folder / 'best.yaml'))}[/]")
        else:
            console.print("[yellow]no trial completed[/]: see trials.csv for why")
        console.print("wrote " + ", ".join(str(f) for f in out["files"]), markup=False)
    return out


def report_study(storage_url: str | None, study_name: str | None, folder: Path, verbose: bool = True) -> dict:
    """The leaderboard, trials.csv, best.yaml and plots of a study as its storage holds it now, from any
    machine (`daxiao tune --storage URL --study NAME --report`); a study still running is reported so far."""
    from ..errors import DaxiaoError
    from .space import Param
    from .storage import open_storage

    storage = open_storage(storage_url, folder)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name is None and len(names) == 1:
        study_name = names[0]
    if study_name not in names:
        raise DaxiaoError(f"No study {study_name!r} in {storage_url or folder / 'study.journal'}; it holds: "
                          f"{', '.join(names) or 'no study'}. Pass --study NAME.")
    study = optuna.load_study(study_name=study_name, storage=storage)
    config = study.user_attrs.get("daxiao_config")
    base = RunConfig.from_dict(config) if config else RunConfig()
    saved = (study.user_attrs.get("daxiao_recipe") or {}).get("space")
    names = list(saved) if saved else sorted({k for t in study.get_trials(deepcopy=False) for k in t.params})
    space = {k: Param(k) for k in names}  # the report needs the names only
    folder.mkdir(parents=True, exist_ok=True)
    return {**write_outputs(study, space, base, folder, verbose), "study": study_name, "folder": str(folder)}
