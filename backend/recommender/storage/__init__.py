"""Persistence: database engine and schema, the repository and its change feed, migrations, media files."""

from .database import DatabaseURLError, create_database_engine
from .feed import Change
from .media import MediaFile, MediaStore
from .migrate import SchemaError, check_schema, ensure_schema, upgrade
from .pages import PageReader
from .records import (
    ContentExists,
    DetectionRecord,
    DetectorChanged,
    ImageRecord,
    ImageRef,
    ImageSummary,
    NameTaken,
    NewImage,
    VectorsMissing,
    WriteConflict,
)
from .repository import Repository

__all__ = [
    "Change",
    "ContentExists",
    "DatabaseURLError",
    "DetectionRecord",
    "DetectorChanged",
    "ImageRecord",
    "ImageRef",
    "ImageSummary",
    "MediaFile",
    "MediaStore",
    "NameTaken",
    "NewImage",
    "PageReader",
    "Repository",
    "SchemaError",
    "VectorsMissing",
    "WriteConflict",
    "check_schema",
    "create_database_engine",
    "ensure_schema",
    "upgrade",
]
