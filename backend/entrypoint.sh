#!/usr/bin/env bash
# Start-up shared by the container and `make run`: wait for the database and migrate,
# fill an empty collection from IMAGES_DIR, then serve. Same steps everywhere, so the
# test of this script is a test of the container's start.
set -euo pipefail

# Weights the operator downloaded on the host (get_data.sh) join the ones baked into the image.
if [ -n "${HOST_WEIGHTS_DIR:-}" ] && [ -f "$HOST_WEIGHTS_DIR/mask_rcnn_coco.h5" ]; then
  ln -sf "$HOST_WEIGHTS_DIR/mask_rcnn_coco.h5" "${WEIGHTS_DIR:?}/mask_rcnn_coco.h5"
fi

# `entrypoint.sh worker [OPTIONS]`: a queue worker (docker compose's worker service). The web
# container migrates the database; a worker only needs the weights above.
if [ "${1:-}" = "worker" ]; then
  shift
  exec recommender worker "$@"
fi

attempts=${DB_WAIT_ATTEMPTS:-30}
for i in $(seq "$attempts"); do
  if recommender db upgrade; then
    break
  fi
  if [ "$i" -eq "$attempts" ]; then
    echo "entrypoint: the database is still unreachable after $attempts attempts; check DATABASE_URL" >&2
    exit 1
  fi
  echo "entrypoint: database not ready (attempt $i/$attempts), retrying in 2 s" >&2
  sleep 2
done

if [ -n "${IMAGES_DIR:-}" ]; then
  if [ -d "$IMAGES_DIR" ]; then
    recommender ingest --if-empty "$IMAGES_DIR"
  else
    echo "entrypoint: IMAGES_DIR=$IMAGES_DIR does not exist; starting with the current collection" >&2
  fi
fi

exec recommender serve "$@"
