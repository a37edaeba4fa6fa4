"""Local mode's API keys: a SQLite table in the data folder (``keys.sqlite3``), read on every
request, so ``stemkube-api keys revoke --local`` takes effect at once on a running service."""

import sqlite3
import threading
from pathlib import Path

from stemkube_api.auth.keys import KeyRecord
from stemkube_api.auth.store import from_json, to_json
from stemkube_api.interfaces import UnavailableError

FILE = "keys.sqlite3"


class SqliteKeyStore:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS api_keys ("
            " key_id TEXT PRIMARY KEY, name TEXT NOT NULL, record TEXT NOT NULL)"
        )
        self.path.chmod(0o600)  # hashes only, but nobody else's business

    # Read per request: nothing to follow.
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def check(self) -> None:
        try:
            with self._lock:
                self._db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise UnavailableError(f"API keys: {self.path} does not answer: {exc}") from exc

    def lookup(self, key_id: str) -> KeyRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT record FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
        return from_json(row[0]) if row else None

    def any_keys(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

    def add(self, record: KeyRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (key_id, name, record) VALUES (?, ?, ?)",
                (record.key_id, record.name, to_json(record)),
            )

    def records(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM api_keys ORDER BY name, key_id").fetchall()
        return [r for r in (from_json(row[0]) for row in rows) if r is not None]

    def revoke(self, name_or_id: str) -> list[KeyRecord]:
        with self._lock:
            rows = self._db.execute(
                "DELETE FROM api_keys WHERE name = ? OR key_id = ? RETURNING record",
                (name_or_id, name_or_id),
            ).fetchall()
        return [r for r in (from_json(row[0]) for row in rows) if r is not None]

    def close(self) -> None:
        with self._lock:
            self._db.close()
