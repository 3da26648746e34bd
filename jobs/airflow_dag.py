"""Airflow DAG: daily entity extraction over a dated folder of news files.

Only wiring: the work is ``nerbatch.runner.run_job``. A day's folder is complete by 02:00 the next
day (as for jobs/nightly_run.sh), so the explicit data-interval timetable runs from 02:00 to 02:00:
``ds`` is the day that ended two hours before the run, on Airflow 2 and 3 alike (Airflow 3's
``@daily`` would name the day that is starting). A run without a logical date (Airflow 3's manual
trigger without one) names no day and fails at once. A retry resumes: it reuses the input files a failed attempt finished. If the
day's files changed after that attempt (late arrivals), the resume is refused and the day is done
afresh, so its entities always come from the files as they are now. A run over the error rate
fails without retries: the same files would fail the same way. Only entity records go to
ENTITIES_ROOT; each day's report, outcomes and errors go to its ``_runs/`` folder, which parquet readers
(and a ``*.parquet`` glob) skip.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

try:  # Airflow 3: the task SDK (the Airflow 2 names still import there, with deprecation warnings)
    from airflow.sdk import dag, task
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task
    from airflow.exceptions import AirflowFailException
from airflow.timetables.interval import CronDataIntervalTimetable

NEWS_ROOT = "/data/news"
ENTITIES_ROOT = "/data/entities"


@dag(schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"), start_date=datetime(2026, 1, 1),
     catchup=False, default_args={"retries": 3, "retry_delay": timedelta(minutes=10)}, tags=["nerbatch"])
def nerbatch_daily():
    @task
    def extract_entities(ds: str | None = None) -> dict:
        """The run's report as the XCom, less its lists of input files (a folder of one-article files
        would put thousands of paths in Airflow's database); the report file has them."""
        from dataclasses import asdict, replace

        from nerbatch.errors import ResumeRefusedError
        from nerbatch.runner import RunOptions, run_job

        if ds is None:
            raise AirflowFailException("this run has no logical date, so no day to tag; trigger it with one")
        if os.path.isdir(ENTITIES_ROOT):  # a missing ENTITIES_ROOT (a volume not mounted) is the run's error
            os.makedirs(f"{ENTITIES_ROOT}/_runs", exist_ok=True)
        options = RunOptions(
            inputs=[f"{NEWS_ROOT}/{ds}/"],
            output=f"{ENTITIES_ROOT}/{ds}.parquet",
            report=f"{ENTITIES_ROOT}/_runs/{ds}.report.json",
            outcomes=f"{ENTITIES_ROOT}/_runs/{ds}.outcomes.parquet",  # names the documents without entities too
            errors=f"{ENTITIES_ROOT}/_runs/{ds}.errors.jsonl",
            keep_fields=("title", "url", "date"),
            resume=True,
        )
        try:
            report = run_job(options)
        except ResumeRefusedError as exc:
            logging.getLogger(__name__).warning("%s: doing the day afresh", exc)
            report = run_job(replace(options, resume=False))
        failure = report.failed(max_error_rate=0.01)  # the rule `nerbatch run` exits 1 on
        if failure:
            raise AirflowFailException(failure)
        return {key: value for key, value in asdict(report).items() if not key.endswith("inputs")}

    extract_entities()


nerbatch_daily()
