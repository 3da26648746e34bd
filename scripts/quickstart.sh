#!/usr/bin/env bash
# Install nerbatch into .venv and run the main job with the shipped default model
# over the sample news documents in examples/, then show a few entity records.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/venv.sh
source scripts/venv.sh
install_into_venv .

mkdir -p out
.venv/bin/nerbatch run --input 'examples/*.jsonl' --output out/entities.parquet \
    --keep-fields title --report out/report.json
.venv/bin/python - <<'PY'
import json

import pyarrow.parquet as pq

table = pq.read_table("out/entities.parquet")
print(f"{table.num_rows} entity records in out/entities.parquet; the first ten:")
for row in table.slice(0, 10).to_pylist():
    print(json.dumps(row, ensure_ascii=False))
PY
