"""Where a study lives: a journal file (the default, one machine or a shared mount) or a database that
workers on any number of machines join (`--storage postgresql://user@host/db --study NAME`).

Three things make a shared PostgreSQL study work when N workers are started with one command at once:

- The driver. SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3 and 2.0 as psycopg2; `database_url` names
  the one installed (``pip install 'daxiao[postgres]'`` brings psycopg 3).
- The schema. Optuna creates its tables on first use; two workers doing so at the same moment on an empty
  database collide in PostgreSQL's catalog (UniqueViolation on pg_type_typname_nsp_index) and one dies.
  Opening the storage holds a PostgreSQL advisory lock, so the first worker creates, the others wait and find.
- Killed workers. RDB storages get Optuna's heartbeat: a trial whose worker stopped beating for the grace
  period is failed by whichever worker looks next and queued again (Optuna's retry callback), so it is not
  left RUNNING forever. `ClaimLock` makes "is the budget spent? then start a trial" one step across workers,
  so two workers finishing together cannot both start the last grid point.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import inspect
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna

from ..errors import DaxiaoError

HEARTBEAT_S = 60          # a running trial's worker writes a heartbeat this often (seconds)
SCHEMA_LOCK = 0x6461786961  # "daxia": the advisory-lock key daxiao takes while Optuna creates its tables
CLAIM_LOCK = 0x64617869     # first half of the two-key lock on a study's trial creation


def postgres(url: str | None) -> bool:
    return bool(url) and url.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def database_url(url: str) -> str:
    """`url` with PostgreSQL's driver made explicit (psycopg 3 where installed, else psycopg2)."""
    if not postgres(url) or "+" in url.split("://", 1)[0]:
        return url
    for module in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{module}://{url.split('://', 1)[1]}"
    raise DaxiaoError("--storage postgresql://... needs a PostgreSQL driver: pip install 'daxiao[postgres]' "
                      "(psycopg 3).")


@contextlib.contextmanager
def advisory_lock(url: str, *key: int) -> Iterator[None]:
    """A PostgreSQL session-level advisory lock, held while the block runs (released if the process dies:
    the server drops a dead connection's locks)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT")
    args = ", ".join(f":k{i}" for i in range(len(key)))
    params = {f"k{i}": k for i, k in enumerate(key)}
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({args})"), params)
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({args})"), params)
    finally:
        engine.dispose()


def _retry_callback() -> dict:
    """Optuna 5's name for the retry-on-stale callback, or Optuna 4's."""
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if "heartbeat_stale_trial_callback" in params:
            return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
        return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}


def rdb_storage(url: str, heartbeat: int = HEARTBEAT_S) -> optuna.storages.RDBStorage:
    url = database_url(url)
    kwargs = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat, **_retry_callback()}
    # pool_pre_ping: a worker idle through a long trial finds its pooled connection still usable
    engine = {"pool_pre_ping": True}
    lock = advisory_lock(url, SCHEMA_LOCK) if postgres(url) else contextlib.nullcontext()
    with lock, warnings.catch_warnings():  # one worker creates the tables; the others then find them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat is "experimental"
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)


def journal_path(url: str | None, folder: Path) -> Path:
    return Path(url) if url else folder / "study.journal"


def open_storage(url: str | None, folder: Path, heartbeat: int = HEARTBEAT_S) -> optuna.storages.BaseStorage:
    """A journal file in `folder` by default; `url` with '://' is a database Optuna opens (sqlite, postgresql,
    mysql), anything else a journal file path. Opened and queried here so a bad URL fails before training."""
    try:
        if url and "://" in url:
            storage = rdb_storage(url, heartbeat)
        else:
            path = journal_path(url, folder)
            path.parent.mkdir(parents=True, exist_ok=True)
            from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

            # The open-lock works on file systems without symlinks too (network mounts shared by workers).
            backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
            storage = optuna.storages.JournalStorage(backend)
        storage.get_all_studies()
    except DaxiaoError:
        raise
    except Exception as e:  # any driver's error: name the URL and the reason, in one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DaxiaoError(f"Cannot open the study storage {url or folder / 'study.journal'}: {reason}") from None
    return storage


class ClaimLock:
    """One worker at a time between "count the trials" and "create the next one" (`acquire`, then `release`
    once the trial exists; releasing twice is harmless). PostgreSQL: an advisory lock per study; journal
    file: an flock beside it; other databases: none (a grid point may then, rarely, run twice at the end)."""

    def __init__(self, url: str | None, folder: Path, study: str):
        self.url, self.study, self._cm = url, study, None
        self.path = None if url and "://" in url else journal_path(url, folder).with_suffix(".claim.lock")
        self._file = None

    def acquire(self) -> None:
        if self.path is not None:
            self._file = open(self.path, "a")  # noqa: SIM115 (held across calls; closed in release)
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif postgres(self.url):
            key = zlib.crc32(self.study.encode()) - 2**31  # int4, as pg_advisory_lock(int, int) takes
            self._cm = advisory_lock(database_url(self.url), CLAIM_LOCK, key)
            self._cm.__enter__()

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)


def heartbeat_on(storage: optuna.storages.BaseStorage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials of workers that stopped beating (their retries are queued by the callback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
