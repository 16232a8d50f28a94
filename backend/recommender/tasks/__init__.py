"""The ingest queue on Celery: the application (``app``), the worker's task (``ingest``), the worker
process (``worker``) and the sending side of ``recommender ingest --queue`` (``client``).

Only imported when BROKER_URL is used: without it nothing here (nor Celery) is loaded.
"""
