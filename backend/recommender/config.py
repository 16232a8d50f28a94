"""Settings read from environment variables, each with a default that works offline.

The CLI's options override these; nothing else in the package reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DETECTORS = ("yolov5s", "maskrcnn")


class SettingsError(ValueError):
    """A setting has a value the service cannot use."""


def _int(env: dict[str, str], key: str, default: int, minimum: int = 1) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""  # empty: SQLite file inside data_dir
    weights_dir: Path | None = None  # None: data_dir / "weights"
    detector: str = "yolov5s"
    images_dir: Path | None = None
    frontend_dir: Path | None = None  # None: the checkout's frontend/ folder
    host: str = "127.0.0.1"
    port: int = 5000
    admin_token: str | None = None
    max_upload_mb: int = 20
    page_size: int = 30
    workers: int = field(default_factory=lambda: max(1, min(2, os.cpu_count() or 1)))

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise SettingsError(f"DETECTOR must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        if not 1 <= self.page_size <= 100:
            raise SettingsError(f"PAGE_SIZE must be between 1 and 100, got {self.page_size}")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'recommender.sqlite3').resolve()}"

    @property
    def resolved_weights_dir(self) -> Path:
        return self.weights_dir if self.weights_dir is not None else self.data_dir / "weights"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    def with_overrides(self, **changes: object) -> "Settings":
        """A copy with the given fields replaced; ``None`` values are ignored (unset CLI options)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("DATA_DIR") or "data")
        weights = env.get("WEIGHTS_DIR")
        images = env.get("IMAGES_DIR")
        frontend = env.get("FRONTEND_DIR")
        return cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL", ""),
            weights_dir=Path(weights) if weights else None,
            detector=env.get("DETECTOR") or "yolov5s",
            images_dir=Path(images) if images else None,
            frontend_dir=Path(frontend) if frontend else None,
            host=env.get("HOST") or "127.0.0.1",
            port=_int(env, "PORT", 5000),
            admin_token=env.get("ADMIN_TOKEN") or None,
            max_upload_mb=_int(env, "MAX_UPLOAD_MB", 20),
            page_size=_int(env, "PAGE_SIZE", 30),
            workers=_int(env, "WORKERS", max(1, min(2, os.cpu_count() or 1))),
        )
