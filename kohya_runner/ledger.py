"""The run ledger: one SQLite file (WAL) in the workspace, a row per run and per sweep.

Several kr processes write at once (a sweep's members, `kr runs stop` beside a supervisor), so every
write is a short IMMEDIATE transaction and readers never block writers (WAL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from . import atomic, runfolder
from .errors import BadInput, Failed, KrError

LEDGER_FILE = "ledger.sqlite"
STATUSES = ("queued", "running", "succeeded", "failed", "stopped", "crashed", "diverged")
ACTIVE = ("queued", "running")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT UNIQUE NOT NULL,
    name          TEXT NOT NULL,
    preset        TEXT,
    spec_hash     TEXT,
    backend       TEXT,
    sweep_id      TEXT,
    status        TEXT NOT NULL,
    reason        TEXT,
    hint          TEXT,
    pid           INTEGER,
    pid_start     REAL,
    pgid          INTEGER,
    supervisor_pid   INTEGER,
    supervisor_start REAL,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    exit_code     INTEGER,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    steps_done    INTEGER,
    steps_total   INTEGER,
    step_offset   INTEGER NOT NULL DEFAULT 0,
    epoch         INTEGER,
    epochs_total  INTEGER,
    loss          REAL,
    min_loss      REAL,
    it_per_s      REAL,
    peak_rss      INTEGER,
    gpu           TEXT,
    run_dir       TEXT NOT NULL,
    result_path   TEXT,
    resumed_from  TEXT,
    peak_vram     INTEGER,
    retry_of      TEXT,
    retry_change  TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs(sweep_id);
CREATE TABLE IF NOT EXISTS sweeps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep_id    TEXT UNIQUE NOT NULL,
    name        TEXT NOT NULL,
    preset      TEXT,
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    finished_at REAL,
    sweep_dir   TEXT NOT NULL,
    members     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sample_jobs (
    job_id      TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    status      TEXT NOT NULL,
    device      TEXT,
    planned     INTEGER NOT NULL DEFAULT 0,
    images      INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    finished_at REAL,
    job_dir     TEXT NOT NULL,
    message     TEXT
);
CREATE TABLE IF NOT EXISTS samples (
    job_id       TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    file         TEXT NOT NULL,
    column_key   TEXT NOT NULL,
    checkpoint   TEXT,
    strength     REAL,
    kind         TEXT NOT NULL,
    subject      TEXT,
    text         TEXT NOT NULL,
    seed         INTEGER NOT NULL,
    prompt_index INTEGER,
    seconds      REAL,
    path         TEXT NOT NULL,
    PRIMARY KEY (job_id, file)
);
CREATE INDEX IF NOT EXISTS samples_run ON samples(run_id);
CREATE TABLE IF NOT EXISTS ratings (
    rating_id   TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    checkpoint  TEXT,
    sample      TEXT,
    reviewer    TEXT NOT NULL,
    stars       INTEGER NOT NULL,
    note        TEXT,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ratings_run ON ratings(run_id);
CREATE TABLE IF NOT EXISTS scores (
    run_id      TEXT NOT NULL,
    checkpoint  TEXT NOT NULL,
    score       REAL,
    parts       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (run_id, checkpoint)
);
"""
SAMPLE_JOB_COLUMNS = ("job_id", "run_id", "status", "device", "planned", "images", "created_at", "finished_at",
                      "job_dir", "message")
SCORE_COLUMNS = ("run_id", "checkpoint", "score", "parts", "created_at")
RATING_COLUMNS = ("rating_id", "run_id", "checkpoint", "sample", "reviewer", "stars", "note", "created_at")
SAMPLE_COLUMNS = ("job_id", "run_id", "file", "column_key", "checkpoint", "strength", "kind", "subject", "text", "seed",
                  "prompt_index", "seconds", "path")


@dataclass
class RunRow:
    id: int
    run_id: str
    name: str
    preset: str | None
    spec_hash: str | None
    backend: str | None
    sweep_id: str | None
    status: str
    reason: str | None
    hint: str | None
    pid: int | None
    pid_start: float | None
    pgid: int | None
    supervisor_pid: int | None
    supervisor_start: float | None
    stop_requested: int
    exit_code: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    steps_done: int | None
    steps_total: int | None
    step_offset: int
    epoch: int | None
    epochs_total: int | None
    loss: float | None
    min_loss: float | None
    it_per_s: float | None
    peak_rss: int | None  # peak memory of the trainer's process tree as PSS (usage.tree_memory)
    gpu: str | None
    run_dir: str
    result_path: str | None
    resumed_from: str | None
    peak_vram: int | None  # bytes in use on the run's GPU at most (NVML); None on the CPU
    retry_of: str | None = None  # an out-of-memory retry: the first run of its chain (kohya_runner.memory)
    retry_change: str | None = None  # … and the memory setting this attempt changed

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    @property
    def steps_cumulative(self) -> int | None:
        """sd-scripts restarts its step counter on resume; the ledger does not."""
        return None if self.steps_done is None else self.steps_done + self.step_offset

    def to_record(self) -> dict[str, Any]:
        """The columns, as run.json keeps them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["duration"] = self.duration
        data["steps_cumulative"] = self.steps_cumulative
        return data


RUN_COLUMNS = [f.name for f in fields(RunRow)]
# Updates touching these columns are copied to the run's run.json at once (progress columns are not:
# run.json is rewritten at the end, and a rebuilt row of a live run gets them on the next update).
MIRRORED = {"status", "pid", "pid_start", "pgid", "supervisor_pid", "supervisor_start", "stop_requested",
            "started_at", "sweep_id", "retry_of", "retry_change"}


@dataclass
class SweepRow:
    id: int
    sweep_id: str
    name: str
    preset: str | None
    status: str
    created_at: float
    finished_at: float | None
    sweep_dir: str
    members: int

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Ledger:
    """The ledger file, opened for writing, or read-only when the workspace's disk is full or read-only
    (`read_only`; reads work, writes raise Failed). A long-lived Ledger (a supervisor's) notices when its
    file was deleted or replaced and reopens it, rebuilding it from the run folders if it is gone."""

    def __init__(self, path: Path, *, rebuild_missing: bool = True):
        self.path = path
        self.rebuild_missing = rebuild_missing
        self.read_only = False
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        """Raises BadInput (a damaged file, naming `kr runs rebuild`) or Failed (cannot create it)."""
        home = self.path.parent
        if self.rebuild_missing and not self.path.exists() and _has_run_folders(home):
            rebuilt = rebuild(home)
            print(f"kr: the ledger {self.path} was missing; rebuilt it from {rebuilt.runs} run folder(s)",
                  file=sys.stderr, flush=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = _connect(self.path)
        except OSError as error:
            raise _unwritable(self.path, error) from None
        except sqlite3.DatabaseError as error:
            if _corrupt(error):
                raise _damaged(self.path, error) from None
            if not self.path.is_file() or not _disk_error(error):
                raise _unwritable(self.path, error) from None
            db = _connect_read_only(self.path)  # a full or read-only disk: reading still works
            self.read_only = True
        self._inode = _inode(self.path)
        return db

    def _current(self) -> sqlite3.Connection:
        """The connection, reopened if the file was deleted or replaced since (another kr rebuilt it)."""
        if _inode(self.path) != self._inode:
            try:
                self._db.close()
            finally:
                self._db = self._open()
        return self._db

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Raises Failed when the ledger cannot be written (disk full, read-only workspace)."""
        db = self._current()
        if self.read_only:
            raise _unwritable(self.path, "the workspace's disk is full or read-only")
        try:
            # IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading a read lock.
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if not _disk_error(error):
                raise
            raise _unwritable(self.path, error) from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as error:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (a failed COMMIT on a full disk); the first error matters
            if isinstance(error, sqlite3.DatabaseError) and _corrupt(error):
                raise _damaged(self.path, error) from None
            if isinstance(error, sqlite3.OperationalError) and _disk_error(error):
                raise _unwritable(self.path, error) from None
            raise

    def _read(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        try:
            return self._current().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as error:
            if _corrupt(error):
                raise _damaged(self.path, error) from None
            raise

    # -- runs ------------------------------------------------------------------------------------

    def create_run(self, name: str, runs_root: Path, **values: Any) -> RunRow:
        """Insert a queued run; its id is `<name>-<seq>` and its directory is created empty (never reused)."""
        run_id = self._insert("runs", "run", name, runs_root, "", "queued", values)
        row = self.get(run_id)
        try:
            write_record(row.run_dir, row.to_record())
        except OSError as error:
            self.finish(run_id, "failed", reason="setup", hint=f"cannot write its run folder: {error}")
            raise _unwritable(runfolder.of(row.run_dir).record, error, self.path.parent) from None
        return row

    def _insert(self, table: str, kind: str, name: str, root: Path, prefix: str, status: str, values: dict) -> str:
        """A row whose id `<prefix><name>-<seq>` comes from the table's own sequence (never reused), and its
        folder, created empty in the same transaction."""
        with self._write() as db:
            cursor = db.execute(f"INSERT INTO {table} ({kind}_id, name, status, created_at, {kind}_dir) "
                                "VALUES (?, ?, ?, ?, '')", (f"pending-{time.time_ns()}", name, status, time.time()))
            seq = cursor.lastrowid
            ident = f"{prefix}{_slug(name)}-{seq:04d}"
            folder = root / ident
            if folder.parent != root or ident.startswith((".", "-")):  # _slug makes this impossible; never escape root
                raise ValueError(f"unsafe {kind} id {ident!r}")
            folder.mkdir(parents=True, exist_ok=False)
            assignments = {f"{kind}_id": ident, f"{kind}_dir": str(folder), **values}
            db.execute(f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in assignments)} WHERE id = ?",
                       (*assignments.values(), seq))
        return ident

    def update(self, run_id: str, **values: Any) -> None:
        unknown = set(values) - set(RUN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown ledger columns {unknown}")
        with self._write() as db:
            db.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in values)} WHERE run_id = ?",
                       (*values.values(), run_id))
        if MIRRORED & set(values):
            self._mirror(run_id)

    def _mirror(self, run_id: str) -> None:
        """Copy the row to its run.json, best effort: a full disk must not end the run (the ledger has it)."""
        try:
            row = self.get(run_id)
            write_record(row.run_dir, row.to_record())
        except (OSError, BadInput):
            pass

    def finish(self, run_id: str, status: str, **values: Any) -> bool:
        """Move an active run to a final status; False if someone else already finished it."""
        assert status in STATUSES and status not in ACTIVE
        values = {"status": status, "finished_at": values.pop("finished_at", time.time()), **values}
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE runs SET {', '.join(f'{k} = ?' for k in values)} WHERE run_id = ? AND status IN ('queued', 'running')",
                (*values.values(), run_id))
            finished = cursor.rowcount == 1
        if finished:
            self._mirror(run_id)
        return finished

    def has(self, run_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)))

    def restore(self, values: dict[str, Any]) -> None:
        """Insert a row as a run folder records it (ledger.rebuild, or a run whose row went missing);
        its sequence number is kept, so ids are never reused."""
        known = {k: v for k, v in values.items() if k in RUN_COLUMNS}
        with self._write() as db:
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(known)}) VALUES ({', '.join('?' for _ in known)})",
                       tuple(known.values()))

    def get(self, run_id: str) -> RunRow:
        rows = self._read(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?", (run_id,))
        row = rows[0] if rows else None
        if row is None:
            raise BadInput(f"no run {run_id!r} in the ledger ({self.path}). Fix: `kr runs ls` lists the runs")
        return RunRow(*row)

    def find(self, ref: str) -> RunRow:
        """A run by id, by its number (`12`), or by a unique prefix. Raises BadInput (none, several, empty)."""
        _refuse_empty(ref, "run", "kr runs ls")
        rows = self._read(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?", (ref,))
        if not rows and ref.isdigit():
            rows = self._read(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?", (int(ref),))
        if not rows:
            escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._read(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id LIKE ? ESCAPE '\\' "
                              "ORDER BY id", (escaped + "%",))
        if len(rows) == 1:
            return RunRow(*rows[0])
        if not rows:
            raise BadInput(f"no run matches {ref!r}. Fix: `kr runs ls` lists the runs")
        names = ", ".join(r[1] for r in rows[:8])
        raise BadInput(f"{ref!r} matches {len(rows)} runs ({names}{', …' if len(rows) > 8 else ''}). Fix: give more of the id")

    def runs(self, *, status: list[str] | None = None, sweep_id: str | None = None,
             limit: int | None = None) -> list[RunRow]:
        where, params = [], []
        if status:
            where.append(f"status IN ({', '.join('?' for _ in status)})")
            params += status
        if sweep_id:
            where.append("sweep_id = ?")
            params.append(sweep_id)
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [RunRow(*row) for row in self._read(sql, params)]

    def attempts(self, first: str) -> list[RunRow]:
        """A run and its out-of-memory retries (runs whose retry_of is it), oldest first."""
        return [RunRow(*row) for row in self._read(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ? OR retry_of = ? ORDER BY id", (first, first))]

    def delete(self, run_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    # -- post-hoc samples and scores (kohya_runner.sample, kohya_runner.score) ---------------------

    def record_sample_job(self, job: dict[str, Any], samples: list[dict[str, Any]]) -> None:
        """A post-hoc sample job and its finished images (rows from kohya_runner.sample.ledger_rows)."""
        with self._write() as db:
            _put(db, "sample_jobs", SAMPLE_JOB_COLUMNS, [job])
            _put(db, "samples", SAMPLE_COLUMNS, samples)

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        """Every post-hoc image of a run, oldest job first."""
        rows = self._read(f"SELECT {', '.join('s.' + c for c in SAMPLE_COLUMNS)} FROM samples s "
                          "JOIN sample_jobs j ON j.job_id = s.job_id WHERE s.run_id = ? ORDER BY j.created_at, s.file",
                          (run_id,))
        return [dict(zip(SAMPLE_COLUMNS, row)) for row in rows]

    def sample_jobs(self, run_id: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        return [dict(zip(SAMPLE_JOB_COLUMNS, row)) for row in
                self._read(f"SELECT {', '.join(SAMPLE_JOB_COLUMNS)} FROM sample_jobs {where} ORDER BY created_at", params)]

    def restore_evaluation(self, run_dir: str | Path) -> None:
        """A run folder's post-hoc samples, scores and ratings into the ledger (a run taken in from elsewhere)."""
        with self._write() as db:
            _restore_evaluation(db, Path(run_dir))

    def add_rating(self, values: dict[str, Any]) -> None:
        with self._write() as db:
            _put(db, "ratings", RATING_COLUMNS, [values])

    def ratings(self, run_id: str) -> list[dict[str, Any]]:
        """A run's ratings, oldest first (kohya_runner.review.ratings)."""
        return [dict(zip(RATING_COLUMNS, row)) for row in self._read(
            f"SELECT {', '.join(RATING_COLUMNS)} FROM ratings WHERE run_id = ? ORDER BY created_at, rating_id", (run_id,))]

    def record_scores(self, run_id: str, scores: list[dict[str, Any]], created_at: float) -> None:
        """A run's checkpoint scores, replacing its earlier ones (created_at: as in its scores.json)."""
        with self._write() as db:
            db.execute("DELETE FROM scores WHERE run_id = ?", (run_id,))
            _put(db, "scores", SCORE_COLUMNS, _score_rows(run_id, scores, created_at))

    def scores(self, run_id: str) -> list[dict[str, Any]]:
        return [json.loads(row[0]) for row in
                self._read("SELECT parts FROM scores WHERE run_id = ? ORDER BY rowid", (run_id,))]

    # -- sweeps ----------------------------------------------------------------------------------

    def create_sweep(self, name: str, sweeps_root: Path, **values: Any) -> SweepRow:
        return self.get_sweep(self._insert("sweeps", "sweep", name, sweeps_root, "sweep-", "running", values))

    def update_sweep(self, sweep_id: str, **values: Any) -> None:
        with self._write() as db:
            db.execute(f"UPDATE sweeps SET {', '.join(f'{k} = ?' for k in values)} WHERE sweep_id = ?",
                       (*values.values(), sweep_id))

    def get_sweep(self, sweep_id: str) -> SweepRow:
        columns = [f.name for f in fields(SweepRow)]
        rows = self._read(f"SELECT {', '.join(columns)} FROM sweeps WHERE sweep_id = ?", (sweep_id,))
        row = rows[0] if rows else None
        if row is None:
            raise BadInput(f"no sweep {sweep_id!r}. Fix: `kr sweep ls` lists the sweeps")
        return SweepRow(*row)

    def find_sweep(self, ref: str) -> SweepRow:
        _refuse_empty(ref, "sweep", "kr sweep ls")
        columns = [f.name for f in fields(SweepRow)]
        rows = self._read(f"SELECT {', '.join(columns)} FROM sweeps WHERE sweep_id = ? OR sweep_id LIKE ? "
                          "OR CAST(id AS TEXT) = ? ORDER BY id", (ref, ref + "%", ref))
        exact = [r for r in rows if r[1] == ref]
        rows = exact or rows
        if len(rows) == 1:
            return SweepRow(*rows[0])
        if not rows:
            raise BadInput(f"no sweep matches {ref!r}. Fix: `kr sweep ls` lists the sweeps")
        raise BadInput(f"{ref!r} matches {len(rows)} sweeps. Fix: give more of the id")

    def sweeps(self) -> list[SweepRow]:
        columns = [f.name for f in fields(SweepRow)]
        return [SweepRow(*row) for row in self._read(f"SELECT {', '.join(columns)} FROM sweeps ORDER BY id DESC")]


def _refuse_empty(ref: str, what: str, listing: str) -> None:
    """An empty reference is a prefix of every id: it must not pick (or delete) one."""
    if not ref.strip():
        raise BadInput(f"no {what} given (an empty id). Fix: give its id, number or a prefix; `{listing}` lists them")


def _slug(name: str) -> str:
    """A run id part safe for folders and shells: letters, digits, '-', '_', '.'."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
    return slug[:40]


def open_ledger(home: Path) -> Ledger:
    """The workspace's ledger, rebuilt from the run folders if its file is missing. Raises BadInput for a
    damaged file (naming `kr runs rebuild`), Failed when it cannot be created."""
    return Ledger(home / LEDGER_FILE)


def duration_text(seconds: float | None) -> str:
    """H:MM:SS (rounded to the second), '–' when unknown: how kr shows a run's duration everywhere."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ----------------------------------------------------------------------------------------------
# Opening the file, and what can go wrong with it.


def _connect(path: Path) -> sqlite3.Connection:
    """A writable connection (WAL), the schema in place. Raises sqlite3.DatabaseError."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
        db.executescript(SCHEMA)
        _add_missing_columns(db)
    except BaseException:
        db.close()
        raise
    return db


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Ledgers written by an older kr lack the newer columns; add them (NULL for old runs)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    for name, kind in (("peak_vram", "INTEGER"), ("retry_of", "TEXT"), ("retry_change", "TEXT")):
        if name not in have:
            try:
                db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError:  # another kr process added it meanwhile
                pass


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Read-only, for a full or read-only disk: `mode=ro` needs the WAL index (-shm) to exist or be
    creatable; failing that, `immutable=1` reads the main file as it is (nothing can write it now).
    Raises BadInput for a damaged file, Failed when even that cannot be read."""
    from urllib.parse import quote

    last: Exception | None = None
    for flags in ("mode=ro", "immutable=1"):
        db = sqlite3.connect(f"file:{quote(str(path))}?{flags}", uri=True, timeout=30, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute("SELECT count(*) FROM runs").fetchone()
            return db
        except sqlite3.DatabaseError as error:
            db.close()
            if _corrupt(error):
                raise _damaged(path, error) from None
            last = error
    raise _unwritable(path, last)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _corrupt(error: sqlite3.DatabaseError) -> bool:
    name = getattr(error, "sqlite_errorname", "") or ""
    return name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in str(error) or "malformed" in str(error)


def _disk_error(error: sqlite3.DatabaseError) -> bool:
    """The disk, not kr: full, read-only, an I/O error, a file that cannot be opened or created."""
    name = getattr(error, "sqlite_errorname", "") or ""
    if name:
        return name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"))
    text = str(error)
    return any(words in text for words in ("disk", "readonly", "read-only", "unable to open"))


def _damaged(path: Path, error: Exception) -> BadInput:
    return BadInput(f"the ledger {path} is damaged ({error}); the runs themselves are safe in their folders. "
                    f"Fix: `kr runs rebuild` re-creates it from the run folders (the damaged file is kept beside it)")


def _unwritable(path: Path, error: Exception | str | None, home: Path | None = None) -> Failed:
    return Failed(f"cannot write {path} ({error}): the workspace {home or path.parent} is full or read-only. "
                  "Fix: free space there, or use --home elsewhere (reading runs still works)")


def _has_run_folders(home: Path) -> bool:
    for folder in (home / "runs", home / "sweeps"):
        try:
            if any(folder.iterdir()):
                return True
        except OSError:
            pass
    return False


# ----------------------------------------------------------------------------------------------
# run.json, and rebuilding the ledger from the run folders (they are the truth; the ledger an index).


def write_record(run_dir: str | Path, values: dict[str, Any]) -> None:
    """The run's row in runs/<id>/run.json (atomically). Raises nothing of kr's (OSError passes)."""
    record = {"schema": "kr.run-record/1", **{k: values.get(k) for k in RUN_COLUMNS}}
    atomic.write_text(runfolder.of(run_dir).record, json.dumps(record, indent=1, default=str) + "\n")


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """run.json's values, None if there is none (a run from an older kr) or it cannot be read. Raises nothing."""
    try:
        data = json.loads(runfolder.of(run_dir).record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def row_from_folder(folder: Path) -> dict[str, Any] | None:
    """The ledger row a run folder describes: run.json, corrected by the archive manifest (written
    before run.json at the end, so it wins over an active status); a folder of an older kr without
    run.json from the manifest and spec alone. None for a folder that is no run. Raises nothing."""
    layout = runfolder.of(folder)
    record = read_record(folder) or {}
    manifest = _read_json(layout.manifest) or {}
    if not record and not manifest and not layout.spec.is_file():
        return None
    values: dict[str, Any] = {k: v for k, v in (manifest.get("run") or {}).items() if k in RUN_COLUMNS}
    values.update({k: v for k, v in record.items() if k in RUN_COLUMNS and v is not None})
    outcome = manifest.get("outcome") or {}
    if outcome.get("status") in STATUSES and values.get("status") in (None, *ACTIVE):
        values.update(status=outcome["status"], reason=outcome.get("reason"),
                      hint=(outcome.get("message") or "") + (f" — {outcome['hint']}" if outcome.get("hint") else ""),
                      spec_hash=values.get("spec_hash") or manifest.get("spec_hash"))
        if manifest.get("result"):
            values["result_path"] = str(folder / manifest["result"])
        losses = manifest.get("losses") or {}
        values.setdefault("loss", losses.get("final_average_loss"))
        values.setdefault("min_loss", losses.get("min_average_loss"))
    values["run_id"] = values.get("run_id") or folder.name
    values["run_dir"] = str(folder)  # the workspace may have moved since
    if not values.get("name"):
        values["name"] = (_read_json(layout.spec) or {}).get("name") or values["run_id"].rsplit("-", 1)[0]
    values.setdefault("status", "queued")  # an active row: reconcile settles it from its files
    if values["status"] not in STATUSES:
        values["status"] = "queued"
    values.setdefault("created_at", _mtime(folder))
    values.setdefault("step_offset", 0)
    values.setdefault("stop_requested", 0)
    if not isinstance(values.get("id"), int):
        tail = values["run_id"].rsplit("-", 1)[-1]
        values["id"] = int(tail) if tail.isdigit() else None
    return values


def _sweep_from_folder(folder: Path, statuses: dict[str, str]) -> tuple[dict[str, Any], list[str]] | None:
    """A sweep row from sweeps/<id>/sweep.json, and its member runs. Raises nothing."""
    data = _read_json(folder / "sweep.json")
    if not data or not data.get("sweep_id"):
        return None
    members = [m for m in data.get("members") or [] if isinstance(m, dict)]
    runs = [r for m in members for r in (m.get("runs") or [])]
    last = [statuses.get((m.get("runs") or [None])[-1]) for m in members]
    owner = data.get("owner") or {}
    from .process import same_process

    if owner and same_process(owner.get("pid"), owner.get("start")):
        status = "running"
    else:
        status = "finished" if members and all(s in STATUSES and s not in (*ACTIVE, "stopped") for s in last) else "stopped"
    tail = data["sweep_id"].rsplit("-", 1)[-1]
    row = {"id": int(tail) if tail.isdigit() else None, "sweep_id": data["sweep_id"], "name": data.get("name") or data["sweep_id"],
           "preset": data.get("preset"), "status": status, "created_at": data.get("created") or _mtime(folder),
           "finished_at": None if status == "running" else _mtime(folder), "sweep_dir": str(folder),
           "members": len(members)}
    return row, runs


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


@dataclass
class Rebuilt:
    runs: int
    sweeps: int
    kept: Path | None  # where the previous file went, if there was one


def rebuild(home: Path, *, keep_previous: bool = False) -> Rebuilt:
    """Re-create the ledger from runs/*/ (run.json, the archive manifest) and sweeps/*/sweep.json.

    With keep_previous, an existing ledger file is first moved aside as `ledger.sqlite.corrupt-<time>`
    (`kr runs rebuild`); without, a missing file is rebuilt and an existing one left alone. The new
    file is built beside it and linked into place, so two processes rebuilding at once agree.
    Raises Failed when the workspace cannot be written.
    """
    path = home / LEDGER_FILE
    kept = None
    if keep_previous and (path.exists() or path.is_symlink()):
        kept = _move_aside(path, "previous" if _readable(path) else "corrupt")
    scratch = home / f".{LEDGER_FILE}.rebuild-{os.getpid()}-{time.time_ns()}"
    runs = sweeps = 0
    try:
        db = _connect(scratch)
        try:
            rows = [r for r in (row_from_folder(f) for f in _folders(home / "runs")) if r]
            statuses = {r["run_id"]: r["status"] for r in rows}
            membership: dict[str, str] = {}
            sweep_rows = []
            for folder in _folders(home / "sweeps"):
                found = _sweep_from_folder(folder, statuses)
                if found:
                    sweep_rows.append(found[0])
                    membership.update({run_id: found[0]["sweep_id"] for run_id in found[1]})
            db.execute("BEGIN")
            for row in sorted(rows, key=lambda r: (r["id"] is None, r["id"] or 0, r["created_at"])):
                row.setdefault("sweep_id", membership.get(row["run_id"]))
                if not row.get("sweep_id"):
                    row["sweep_id"] = membership.get(row["run_id"])
                known = {k: v for k, v in row.items() if k in RUN_COLUMNS and not (k == "id" and v is None)}
                db.execute(f"INSERT OR IGNORE INTO runs ({', '.join(known)}) VALUES ({', '.join('?' for _ in known)})",
                           tuple(known.values()))
                runs += 1
            for row in sweep_rows:
                known = {k: v for k, v in row.items() if not (k == "id" and v is None)}
                db.execute(f"INSERT OR IGNORE INTO sweeps ({', '.join(known)}) VALUES ({', '.join('?' for _ in known)})",
                           tuple(known.values()))
                sweeps += 1
            for folder in _folders(home / "runs"):
                _restore_evaluation(db, folder)
            for table, root in (("runs", home / "runs"), ("sweeps", home / "sweeps")):
                _skip_used_numbers(db, table, root)
            db.execute("COMMIT")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        try:
            os.link(scratch, path)
        except FileExistsError:
            pass  # another kr rebuilt it meanwhile: theirs is as good
    except (OSError, sqlite3.OperationalError) as error:
        raise _unwritable(path, error) from None
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{scratch}{suffix}").unlink(missing_ok=True)
    return Rebuilt(runs, sweeps, kept)


def _restore_evaluation(db: sqlite3.Connection, run_dir: Path) -> None:
    """A run folder's post-hoc sample jobs (posthoc/*/job.json) and scores (scores.json) back into the ledger."""
    from .sample import ledger_rows, rebuild_rows

    for data in rebuild_rows(run_dir):
        job, samples = ledger_rows(data)
        _put(db, "sample_jobs", SAMPLE_JOB_COLUMNS, [job])
        _put(db, "samples", SAMPLE_COLUMNS, samples)
    ratings = _read_json(runfolder.of(run_dir).ratings)
    _put(db, "ratings", RATING_COLUMNS, [r for r in (ratings or {}).get("ratings") or [] if isinstance(r, dict)
                                         and all(k in r for k in ("rating_id", "run_id", "reviewer", "stars", "created_at"))])
    scores = _read_json(runfolder.of(run_dir).scores)
    if scores and isinstance(scores.get("checkpoints"), list):
        _put(db, "scores", SCORE_COLUMNS, _score_rows(scores["run_id"], scores["checkpoints"], scores.get("created_at") or 0.0))


def _put(db: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Insert or replace rows (dicts; a missing key is NULL) into one of the evaluation tables."""
    if rows:
        db.executemany(f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                       [tuple(row.get(k) for k in columns) for row in rows])


def _score_rows(run_id: str, entries: list[dict[str, Any]], created_at: float) -> list[dict[str, Any]]:
    return [{"run_id": run_id, "checkpoint": e["checkpoint"], "score": e.get("score"),
             "parts": json.dumps(e, sort_keys=True), "created_at": created_at} for e in entries]


def _skip_used_numbers(db: sqlite3.Connection, table: str, root: Path) -> None:
    """Every folder's number stays taken, even a folder too broken to give a row: the next id must not
    name a folder that exists (the folder is created with exist_ok=False)."""
    numbers = [int(tail) for tail in (f.name.rsplit("-", 1)[-1] for f in _folders(root)) if tail.isdigit()]
    if not numbers:
        return
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    if row is None:
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, max(numbers)))
    elif row[0] < max(numbers):
        db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (max(numbers), table))


def _folders(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _readable(path: Path) -> bool:
    """The file is a ledger SQLite can read (then a rebuild keeps it as `previous`, not `corrupt`)."""
    try:
        _connect_read_only(path).close()
        return True
    except KrError:
        return False


def _move_aside(path: Path, label: str) -> Path:
    """`ledger.sqlite` (and its -wal/-shm) → `ledger.sqlite.<label>-<time>[-wal|-shm]`. Raises Failed."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{label}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
    try:
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{path}{suffix}")
            if source.exists():
                os.replace(source, f"{target}{suffix}")
    except OSError as error:
        raise _unwritable(path, error) from None
    return target
