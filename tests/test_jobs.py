"""The scheduled-job entry points in jobs/, run on real files with the shipped model."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nerbatch.runner import WorkFolder

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def _day_folder(root: Path, news_documents, bad: int = 0) -> Path:
    root.mkdir(parents=True)
    docs = [json.dumps(d) for d in news_documents[:3]] + ["{not json"] * bad
    (root / "a.jsonl").write_text("\n".join(docs) + "\n", encoding="utf-8")
    return root


def _interrupted_run_of_other_inputs(output: Path) -> None:
    """A work folder as a killed run leaves it, whose inputs have changed since."""
    work = WorkFolder(str(output))
    work.begin({"inputs": "as they were"}, resume=False)
    work.mark_complete("gone.jsonl", {"part": "part-00000.parquet"})
    work.release()


def test_the_cron_wrapper_finds_nerbatch_without_path_and_can_start_afresh(tmp_path, news_documents):
    app = tmp_path / "app"  # a checkout as scripts/quickstart.sh leaves it
    (app / "jobs").mkdir(parents=True)
    wrapper = shutil.copy(JOBS / "nightly_run.sh", app / "jobs")
    day = _day_folder(tmp_path / "news", news_documents)
    output = tmp_path / "entities.parquet"
    cron_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def wrapper_run(**env):
        return subprocess.run(["bash", wrapper, str(day), str(output)], env={**cron_env, **env},
                              capture_output=True, text=True, timeout=300)

    missing = wrapper_run()
    assert missing.returncode == 2 and "nerbatch not found" in missing.stderr
    folder = subprocess.run(["bash", wrapper, str(day), str(tmp_path / "entities") + "/"], env=cron_env,
                            capture_output=True, text=True, timeout=60)  # its report would land inside it
    assert folder.returncode == 2 and "usage: nightly_run.sh INPUT_DIR OUTPUT.parquet" in folder.stderr

    (app / ".venv" / "bin").mkdir(parents=True)
    os.symlink(Path(sys.executable).parent / "nerbatch", app / ".venv" / "bin" / "nerbatch")
    (tmp_path / "cron.d").mkdir()  # cron calls the wrapper through a link elsewhere: .venv is still its checkout's
    os.symlink(wrapper, tmp_path / "cron.d" / "nightly")
    wrapper = str(tmp_path / "cron.d" / "nightly")
    for where in (tmp_path / "typo" / "entities.parquet", day / "a.jsonl" / "entities.parquet"):
        unwritable = subprocess.run(["bash", wrapper, str(day), str(where)], env=cron_env, capture_output=True,
                                    text=True, timeout=60)  # a mistyped path, or a volume not mounted
        assert unwritable.returncode == 2 and "nightly_run.sh: cannot" in unwritable.stderr, unwritable.stderr
    assert not (tmp_path / "typo").exists()
    _interrupted_run_of_other_inputs(output)
    refused = wrapper_run()
    assert refused.returncode == 2 and "cannot resume" in refused.stderr, refused.stderr
    # the message's remedies both work for the wrapper, which always passes --resume
    work = tmp_path / ".entities.parquet.nerbatch-work"
    assert f"or remove {str(work)!r} to start afresh" in refused.stderr, refused.stderr
    shutil.rmtree(work)
    assert wrapper_run().returncode == 0
    _interrupted_run_of_other_inputs(output)
    fresh = wrapper_run(NERBATCH_FRESH="1")
    assert fresh.returncode == 0, fresh.stderr
    report = json.loads((tmp_path / "_runs" / "entities.report.json").read_text())
    assert report["docs_ok"] == 3 and report["resumed_inputs"] == []
    assert report["errors"] == str(tmp_path / "_runs" / "entities.errors.jsonl")
    assert (tmp_path / "_runs" / "entities.outcomes.parquet").is_file()
    # beside the output only entity records: the folder reads as one dataset of them
    assert [p.name for p in tmp_path.glob("*.parquet")] == ["entities.parquet"]
    assert pq.read_table(tmp_path, ignore_prefixes=[".", "_", "app", "news", "cron.d"]).num_rows == report["entities"]


@pytest.fixture(params=["airflow 2", "airflow 3"])
def airflow_dag(monkeypatch, tmp_path, request):
    """jobs/airflow_dag.py imported over a stand-in for Airflow's decorators: the DAG's own
    task function, unwrapped, and what it gave the DAG."""
    built: dict = {}

    class AirflowFailException(Exception):
        pass

    class CronDataIntervalTimetable:
        def __init__(self, cron, timezone):
            self.cron, self.timezone = cron, timezone

    def dag(**settings):
        def decorate(build):
            def make_dag():
                built["settings"] = settings
                build()
            return make_dag
        return decorate

    def task(function):
        built[function.__name__] = function
        return lambda *args, **kwargs: None  # building the DAG does not run the task

    stand_ins = {
        "airflow": {},
        "airflow.timetables": {},
        "airflow.timetables.interval": {"CronDataIntervalTimetable": CronDataIntervalTimetable},
    }
    if request.param == "airflow 2":
        stand_ins["airflow.decorators"] = {"dag": dag, "task": task}
        stand_ins["airflow.exceptions"] = {"AirflowFailException": AirflowFailException}
    else:  # only the task SDK's names: the deprecated ones may be gone
        stand_ins["airflow.sdk"] = {"dag": dag, "task": task}
        stand_ins["airflow.sdk.exceptions"] = {"AirflowFailException": AirflowFailException}
    for name, attributes in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attributes))
    spec = importlib.util.spec_from_file_location("nerbatch_airflow_dag", JOBS / "airflow_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.NEWS_ROOT, module.ENTITIES_ROOT = str(tmp_path / "news"), str(tmp_path / "entities")
    (tmp_path / "entities").mkdir()
    built["fail"] = AirflowFailException
    return built


def test_the_airflow_task_tags_the_finished_day_and_redoes_a_changed_one(airflow_dag, tmp_path, news_documents):
    timetable = airflow_dag["settings"]["schedule"]
    assert (timetable.cron, timetable.timezone) == ("0 2 * * *", "UTC")  # ds = the day completed by 02:00
    _day_folder(tmp_path / "news" / "2026-01-01", news_documents)
    _interrupted_run_of_other_inputs(tmp_path / "entities" / "2026-01-01.parquet")
    xcom = airflow_dag["extract_entities"](ds="2026-01-01")
    assert xcom["docs_ok"] == 3 and not [key for key in xcom if key.endswith("inputs")]  # lists stay in the file
    report = json.loads((tmp_path / "entities" / "_runs" / "2026-01-01.report.json").read_text())
    assert report["resumed_inputs"] == [] and report["errors"].endswith("/entities/_runs/2026-01-01.errors.jsonl")
    assert (tmp_path / "entities" / "_runs" / "2026-01-01.outcomes.parquet").is_file()
    assert pq.read_table(tmp_path / "entities").num_rows == report["entities"]  # entity records only


def test_the_airflow_task_refuses_an_entities_folder_that_is_missing(airflow_dag, tmp_path, news_documents):
    from nerbatch.errors import OutputError

    _day_folder(tmp_path / "news" / "2026-01-01", news_documents)
    (tmp_path / "entities").rmdir()  # a volume not mounted: nothing is made in its place
    with pytest.raises(OutputError, match="does not exist"):
        airflow_dag["extract_entities"](ds="2026-01-01")
    assert not (tmp_path / "entities").exists()


def test_the_airflow_task_fails_without_retries_when_the_run_names_no_day(airflow_dag, tmp_path):
    with pytest.raises(airflow_dag["fail"], match="no logical date"):
        airflow_dag["extract_entities"](ds=None)
    assert not list((tmp_path / "entities").iterdir())


def test_the_airflow_task_fails_without_retries_over_the_error_rate(airflow_dag, tmp_path, news_documents):
    _day_folder(tmp_path / "news" / "2026-01-02", news_documents, bad=1)
    with pytest.raises(airflow_dag["fail"], match="1 of 4 documents failed"):
        airflow_dag["extract_entities"](ds="2026-01-02")
