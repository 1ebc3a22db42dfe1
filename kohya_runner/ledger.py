"""The run ledger: one SQLite file (WAL) in the workspace, a row per run and per sweep.

Several kr processes write at once (a sweep's members, `kr runs stop` beside a supervisor), so every
write is a short IMMEDIATE transaction and readers never block writers (WAL).
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from .errors import BadInput

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
    peak_vram     INTEGER
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
"""


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

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["duration"] = self.duration
        data["steps_cumulative"] = self.steps_cumulative
        return data


RUN_COLUMNS = [f.name for f in fields(RunRow)]


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
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Ledgers written by an older kr lack the newer columns; add them (NULL for old runs)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        for name, kind in (("peak_vram", "INTEGER"),):
            if name not in have:
                try:
                    self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError:  # another kr process added it meanwhile
                    pass

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading a read lock.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- runs ------------------------------------------------------------------------------------

    def create_run(self, name: str, runs_root: Path, **values: Any) -> RunRow:
        """Insert a queued run; its id is `<name>-<seq>` and its directory is created empty (never reused)."""
        run_id = self._insert("runs", "run", name, runs_root, "", "queued", values)
        return self.get(run_id)

    def _insert(self, table: str, kind: str, name: str, root: Path, prefix: str, status: str, values: dict) -> str:
        """A row whose id `<prefix><name>-<seq>` comes from the table's own sequence (never reused), and its
        folder, created empty in the same transaction."""
        with self._write() as db:
            cursor = db.execute(f"INSERT INTO {table} ({kind}_id, name, status, created_at, {kind}_dir) "
                                "VALUES (?, ?, ?, ?, '')", (f"pending-{time.time_ns()}", name, status, time.time()))
            seq = cursor.lastrowid
            ident = f"{prefix}{_slug(name)}-{seq:04d}"
            folder = root / ident
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

    def finish(self, run_id: str, status: str, **values: Any) -> bool:
        """Move an active run to a final status; False if someone else already finished it."""
        assert status in STATUSES and status not in ACTIVE
        values = {"status": status, "finished_at": values.pop("finished_at", time.time()), **values}
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE runs SET {', '.join(f'{k} = ?' for k in values)} WHERE run_id = ? AND status IN ('queued', 'running')",
                (*values.values(), run_id))
            return cursor.rowcount == 1

    def get(self, run_id: str) -> RunRow:
        row = self._db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise BadInput(f"no run {run_id!r} in the ledger ({self.path}). Fix: `kr runs ls` lists the runs")
        return RunRow(*row)

    def find(self, ref: str) -> RunRow:
        """A run by id, by its number (`12`), or by a unique prefix."""
        rows = self._db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?", (ref,)).fetchall()
        if not rows and ref.isdigit():
            rows = self._db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?", (int(ref),)).fetchall()
        if not rows:
            escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id LIKE ? ESCAPE '\\' "
                                    "ORDER BY id", (escaped + "%",)).fetchall()
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
        return [RunRow(*row) for row in self._db.execute(sql, params).fetchall()]

    def delete(self, run_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    # -- sweeps ----------------------------------------------------------------------------------

    def create_sweep(self, name: str, sweeps_root: Path, **values: Any) -> SweepRow:
        return self.get_sweep(self._insert("sweeps", "sweep", name, sweeps_root, "sweep-", "running", values))

    def update_sweep(self, sweep_id: str, **values: Any) -> None:
        with self._write() as db:
            db.execute(f"UPDATE sweeps SET {', '.join(f'{k} = ?' for k in values)} WHERE sweep_id = ?",
                       (*values.values(), sweep_id))

    def get_sweep(self, sweep_id: str) -> SweepRow:
        columns = [f.name for f in fields(SweepRow)]
        row = self._db.execute(f"SELECT {', '.join(columns)} FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone()
        if row is None:
            raise BadInput(f"no sweep {sweep_id!r}. Fix: `kr sweep ls` lists the sweeps")
        return SweepRow(*row)

    def find_sweep(self, ref: str) -> SweepRow:
        columns = [f.name for f in fields(SweepRow)]
        rows = self._db.execute(f"SELECT {', '.join(columns)} FROM sweeps WHERE sweep_id = ? OR sweep_id LIKE ? "
                                "OR CAST(id AS TEXT) = ? ORDER BY id", (ref, ref + "%", ref)).fetchall()
        exact = [r for r in rows if r[1] == ref]
        rows = exact or rows
        if len(rows) == 1:
            return SweepRow(*rows[0])
        if not rows:
            raise BadInput(f"no sweep matches {ref!r}. Fix: `kr sweep ls` lists the sweeps")
        raise BadInput(f"{ref!r} matches {len(rows)} sweeps. Fix: give more of the id")

    def sweeps(self) -> list[SweepRow]:
        columns = [f.name for f in fields(SweepRow)]
        return [SweepRow(*row) for row in self._db.execute(f"SELECT {', '.join(columns)} FROM sweeps ORDER BY id DESC")]


def _slug(name: str) -> str:
    """A run id part safe for folders and shells: letters, digits, '-', '_', '.'."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
    return slug[:40]


def open_ledger(home: Path) -> Ledger:
    return Ledger(home / "ledger.sqlite")


def duration_text(seconds: float | None) -> str:
    """H:MM:SS (rounded to the second), '–' when unknown: how kr shows a run's duration everywhere."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
