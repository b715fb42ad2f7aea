#!/bin/sh
# A shell step that needs the scheduler's Python (cron gives it PATH=/usr/bin:/bin only):
# `python` must be the scheduler's interpreter, which has omegaconf. It writes, one per line
# to $TEST_RECORD: $CRUDE_LINK_PYTHON, the first entry of $PATH, the `python` found on PATH.
set -e
python -c 'import omegaconf'
"$CRUDE_LINK_PYTHON" -c 'import omegaconf'
printf '%s\n' "$CRUDE_LINK_PYTHON" "${PATH%%:*}" "$(command -v python)" > "$TEST_RECORD"
