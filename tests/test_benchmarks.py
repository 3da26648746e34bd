"""The benchmark scripts answer a corpus or bundle they cannot read with one line and exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SHIPPED = str(Path(__file__).resolve().parents[1] / "nerbatch" / "models" / "default")


@pytest.mark.parametrize("script, extra", [
    ("ablation.py", []),
    ("document_consistency.py", []),
    ("label_consistency.py", []),
    ("many_files.py", []),
    ("model_throughput.py", [f"shipped={SHIPPED}"]),
    ("parquet_memory.py", []),
    ("raw_text_f1.py", []),
    ("run_throughput.py", []),
    ("score_calibration.py", [SHIPPED]),
    ("tokenizer_agreement.py", []),
    ("wrapped_text.py", []),
])
def test_a_missing_corpus_is_one_line_and_exit_2(tmp_path, script, extra):
    missing = str(tmp_path / "missing.csv.zip")
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--data", missing, *extra],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"{script}: error: {missing}") and done.stderr.count("\n") == 1, done.stderr
