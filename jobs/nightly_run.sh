#!/usr/bin/env bash
# Cron entry point: tag yesterday's news files (a complete folder by 02:00). Rerunning it with the
# same arguments after an interruption resumes the interrupted run (--resume); a resume is refused
# (exit 2) if the folder's files changed since, and the run must then be started afresh without it.
#   0 2 * * *  /opt/nerbatch/jobs/nightly_run.sh /data/news/$(date -d yesterday +\%F) /data/entities/$(date -d yesterday +\%F).parquet
# Exit codes are nerbatch's: 0 ok, 1 too many bad documents or an input not readable to its end,
# 2 configuration error, another run still writing the same output, or an output that could not be
# written (a full disk, say).
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: nightly_run.sh INPUT_DIR OUTPUT.parquet" >&2
    exit 2
fi
input_dir=$1
output=$2
exec nerbatch run --input "$input_dir" --output "$output" --resume --quiet \
    --report "${output%.parquet}.report.json" --outcomes "${output%.parquet}.outcomes.parquet" --keep-fields "${NERBATCH_KEEP_FIELDS-title,url,date}"
