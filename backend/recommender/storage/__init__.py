"""Persistence: database engine and schema, the repository, migrations, and the media files."""

from .database import DatabaseURLError, create_database_engine
from .media import MediaFile, MediaStore
from .migrate import SchemaError, check_schema, ensure_schema, upgrade
from .repository import DetectionRecord, ImageRecord, ImageSummary, NewImage, Repository

__all__ = [
    "DatabaseURLError",
    "DetectionRecord",
    "ImageRecord",
    "ImageSummary",
    "MediaFile",
    "MediaStore",
    "NewImage",
    "Repository",
    "SchemaError",
    "check_schema",
    "create_database_engine",
    "ensure_schema",
    "upgrade",
]
