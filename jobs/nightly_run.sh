#!/usr/bin/env bash
# Cron entry point: tag the day's news files, resuming if yesterday's run was interrupted.
#   0 2 * * *  /opt/nerbatch/jobs/nightly_run.sh /data/news/$(date +\%F) /data/entities/$(date +\%F).parquet
# Exit codes are nerbatch's: 0 ok, 1 too many bad documents or an input not readable to its end,
# 2 configuration error, or another run still writing the same output.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: nightly_run.sh INPUT_DIR OUTPUT.parquet" >&2
    exit 2
fi
input_dir=$1
output=$2
exec nerbatch run --input "$input_dir" --output "$output" --resume --quiet \
    --report "${output%.parquet}.report.json" --outcomes "${output%.parquet}.outcomes.parquet" --keep-fields "${NERBATCH_KEEP_FIELDS-title,url,date}"
