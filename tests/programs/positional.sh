#!/bin/sh
# A step that is a shell script: writes each word it got ("$@"), one per line, to $TEST_RECORD.
printf '%s\n' "$@" > "$TEST_RECORD"
