"""Settings read from environment variables, each with a default that works offline.

The CLI's options override them; nothing else in the package reads the environment. Names
(detector, profile, index kind) are checked against their registries by ``bootstrap``, so this
module needs nothing but the standard library. Every
path is made absolute when a ``Settings`` is created, against the working directory of that
moment, so nothing downstream depends on where a later call happens to run (Flask, for one,
resolves relative paths against the package folder).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path


class SettingsError(ValueError):
    """A setting has a value the service cannot use."""


def _cores() -> int:
    return os.cpu_count() or 1


def _default_detect_threads() -> int:
    # Two detections at once keep both cores of a small machine busy; more only queue.
    return max(1, min(2, _cores()))


def _int(env: dict[str, str], key: str, default: int, minimum: int = 1) -> int:
    value = _number(env, key, default, int, "a whole number")
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, got {value}")
    return value


def _seconds(env: dict[str, str], key: str, default: float) -> float:
    value = _number(env, key, default, float, "a number of seconds")
    if not 0 < value < float("inf"):
        raise SettingsError(f"{key} must be a positive number of seconds, got {value}")
    return value


def _number(env: dict[str, str], key: str, default: int | float, kind: type, meaning: str) -> int | float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{key} must be {meaning}, got {raw!r}") from None


def _path(raw: str | None) -> Path | None:
    return Path(raw) if raw else None


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else Path(os.path.abspath(os.path.expanduser(path)))


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""  # empty: SQLite file inside data_dir
    weights_dir: Path | None = None  # None: data_dir / "weights"
    detector: str = "yolov5s"
    detect_profile: str = "balanced"
    images_dir: Path | None = None  # None: data_dir / "images"
    frontend_dir: Path | None = None  # None: the page shipped inside the package
    host: str = "127.0.0.1"
    port: int = 5000
    admin_token: str | None = None
    max_upload_mb: int = 20
    page_size: int = 30
    detect_threads: int = _default_detect_threads()
    web_workers: int = 2
    index: str = "exact"
    broker_url: str | None = None  # None: no queue (``ingest --queue`` and ``worker`` refuse to start)
    result_backend: str | None = None  # None: the broker when it is Redis, else RPC replies
    broker_visibility_timeout: int = 300  # s before a Redis broker redelivers a dead worker's tasks
    worker_concurrency: int = _cores()  # detections at once in one queue worker: one per core
    db_timeout: float = 5.0  # seconds one database round trip may take before it counts as an outage

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_dir") and value is not None:
                object.__setattr__(self, f.name, _absolute(Path(value)))
        if not 1 <= self.page_size <= 100:
            raise SettingsError(f"PAGE_SIZE must be between 1 and 100, got {self.page_size}")
        for name in ("detect_threads", "web_workers", "worker_concurrency", "max_upload_mb", "broker_visibility_timeout"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()} must be at least 1, got {getattr(self, name)}")
        if not self.db_timeout > 0:
            raise SettingsError(f"DB_TIMEOUT must be a positive number of seconds, got {self.db_timeout}")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'recommender.sqlite3'}"

    @property
    def resolved_weights_dir(self) -> Path:
        return self.weights_dir if self.weights_dir is not None else self.data_dir / "weights"

    @property
    def resolved_images_dir(self) -> Path:
        return self.images_dir if self.images_dir is not None else self.data_dir / "images"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def snapshot_dir(self) -> Path:
        """Index snapshots, one folder per detector (a cache: the database is the truth)."""
        return self.data_dir / "index"

    @property
    def resolved_result_backend(self) -> str | None:
        """Where workers leave task outcomes: RESULT_BACKEND, else the broker if it is Redis, else RPC."""
        if self.result_backend or not self.broker_url:
            return self.result_backend
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://", "redis+socket://")) else "rpc://"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored (unset CLI options)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            data_dir=Path(env.get("DATA_DIR") or "data"),
            database_url=env.get("DATABASE_URL", ""),
            weights_dir=_path(env.get("WEIGHTS_DIR")),
            detector=env.get("DETECTOR") or "yolov5s",
            detect_profile=env.get("DETECT_PROFILE") or "balanced",
            images_dir=_path(env.get("IMAGES_DIR")),
            frontend_dir=_path(env.get("FRONTEND_DIR")),
            host=env.get("HOST") or "127.0.0.1",
            port=_int(env, "PORT", 5000, minimum=0),
            admin_token=env.get("ADMIN_TOKEN") or None,
            max_upload_mb=_int(env, "MAX_UPLOAD_MB", 20),
            page_size=_int(env, "PAGE_SIZE", 30),
            detect_threads=_detect_threads(env),
            web_workers=_int(env, "WEB_WORKERS", 2),
            index=env.get("INDEX") or "exact",
            broker_url=env.get("BROKER_URL") or None,
            result_backend=env.get("RESULT_BACKEND") or None,
            broker_visibility_timeout=_int(env, "BROKER_VISIBILITY_TIMEOUT", 300),
            worker_concurrency=_int(env, "WORKER_CONCURRENCY", _cores()),
            db_timeout=_seconds(env, "DB_TIMEOUT", 5.0),
        )


def _detect_threads(env: dict[str, str]) -> int:
    if not env.get("DETECT_THREADS") and env.get("WORKERS"):
        # WORKERS was the old name; it read like "web processes", which it never was.
        warnings.warn("WORKERS is deprecated: use DETECT_THREADS (detections at once)", DeprecationWarning, stacklevel=3)
        return _int(env, "WORKERS", _default_detect_threads())
    return _int(env, "DETECT_THREADS", _default_detect_threads())
