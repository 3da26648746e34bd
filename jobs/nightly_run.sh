#!/usr/bin/env bash
# Cron entry point: tag yesterday's news files (a complete folder by 02:00). Rerunning it with the
# same arguments after an interruption resumes the interrupted run (--resume). A resume is refused
# (exit 2) if the folder's files changed since; rerun with NERBATCH_FRESH=1 (or remove the work
# folder that the message names) to start afresh.
#   0 2 * * *  /opt/nerbatch/jobs/nightly_run.sh /data/news/$(date -d yesterday +\%F) /data/entities/$(date -d yesterday +\%F).parquet
# The nerbatch it runs: $NERBATCH if set, else the one on PATH, else this checkout's .venv (what
# scripts/quickstart.sh installs), since cron's PATH is only /usr/bin:/bin.
# Only entity records go beside OUTPUT, so a loader may read /data/entities/*.parquet or the folder;
# the run's report, outcomes and errors go to _runs/ there (named after OUTPUT), which such readers skip.
# Exit codes are nerbatch's: 0 ok, 1 too many bad documents or an input not readable to its end,
# 2 configuration error (nerbatch not found included), another run still writing the same output,
# or an output that could not be written (a full disk, say).
set -euo pipefail
if [ $# -ne 2 ] || [ "${2%.parquet}" = "$2" ]; then  # the run's other files are named after OUTPUT
    echo "usage: nightly_run.sh INPUT_DIR OUTPUT.parquet" >&2
    exit 2
fi
input_dir=$1
output=$2
nerbatch=${NERBATCH:-$(command -v nerbatch || echo "$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)/.venv/bin/nerbatch")}
if [ ! -x "$nerbatch" ]; then
    echo "nightly_run.sh: nerbatch not found (tried ${nerbatch}); set NERBATCH=/path/to/nerbatch" >&2
    exit 2
fi
resume=(--resume)
if [ "${NERBATCH_FRESH:-0}" = 1 ]; then
    resume=()
fi
# only _runs/ is made: an output folder that is missing (a typo, a volume not mounted) is refused
folder=$(dirname "$output")
if [ ! -d "$folder" ]; then
    echo "nightly_run.sh: cannot write $output: folder $folder does not exist" >&2
    exit 2
fi
runs=$folder/_runs
if ! mkdir -p "$runs"; then
    echo "nightly_run.sh: cannot create $runs for the run's report, outcomes and errors" >&2
    exit 2
fi
run=$runs/$(basename "${output%.parquet}")
exec "$nerbatch" run --input "$input_dir" --output "$output" ${resume[@]+"${resume[@]}"} --quiet \
    --report "$run.report.json" --outcomes "$run.outcomes.parquet" --errors "$run.errors.jsonl" \
    --keep-fields "${NERBATCH_KEEP_FIELDS-title,url,date}"
