#!/bin/sh
# Creates bench/.flower-venv with a pinned Flower (and the Celery it needs), used only by the benchmarks.
# Usage: sh bench/flower_env.sh   (idempotent; PYTHON overrides the interpreter)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
VENV="$HERE/.flower-venv"
PYTHON=${PYTHON:-python3}
FLOWER_VERSION=2.2.0
CELERY_VERSION=5.5.3
if [ -x "$VENV/bin/celery" ] && "$VENV/bin/python" -c "import flower, sys; sys.exit(flower.__version__ != '$FLOWER_VERSION')" 2>/dev/null; then
    exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "flower==$FLOWER_VERSION" "celery[redis]==$CELERY_VERSION" psutil
"$VENV/bin/python" -c "import flower; print('flower', flower.__version__, 'in', '$VENV')"
