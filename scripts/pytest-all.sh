#!/usr/bin/env bash
# Runs the whole suite. Kernel tests need root + netns; under CI=true they must run (no skips).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/pytest -q -p no:cacheprovider tests "$@"
