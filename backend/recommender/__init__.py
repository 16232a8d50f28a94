"""Image recommendation service: COCO class-presence vectors and nearest neighbours."""

__version__ = "0.1.0"
