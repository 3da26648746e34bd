"""Airflow DAG: daily entity extraction over a dated folder of news files.

Only wiring: the work is ``nerbatch.runner.run_job``. Retries are safe because
``resume=True`` reuses the input files a failed attempt already finished. ``ds``
names a finished day, whose folder should no longer change; if its files did change
after a failed attempt, the retry refuses to resume (one-line error) and the run must
be started afresh without ``resume``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.decorators import dag, task


@dag(schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False,
     default_args={"retries": 3, "retry_delay": timedelta(minutes=10)}, tags=["nerbatch"])
def nerbatch_daily():
    @task
    def extract_entities(ds: str | None = None) -> dict:
        from dataclasses import asdict

        from nerbatch.runner import RunOptions, run_job

        report = run_job(RunOptions(
            inputs=[f"/data/news/{ds}/"],
            output=f"/data/entities/{ds}.parquet",
            report=f"/data/entities/{ds}.report.json",
            outcomes=f"/data/entities/{ds}.outcomes.parquet",  # names the documents without entities too
            keep_fields=("title", "url", "date"),
            resume=True,
        ))
        failure = report.failed(max_error_rate=0.01)  # the rule `nerbatch run` exits 1 on
        if failure:
            raise RuntimeError(failure)
        return asdict(report)

    extract_entities()


nerbatch_daily()
