"""The batch job: input files -> pipeline -> entity records, with nothing lost.

Every input file is processed into its own part (entity records plus error
records) inside a work folder next to the output, and recorded as complete in
that folder's manifest only once its parts are durably in place. When every
input is done the parts are merged into the output (a file, or a folder of
part files), which appears atomically, and the work folder is removed. A crash
leaves no output that looks complete; ``resume=True`` reuses the completed
parts, so the rerun finishes the work without duplicates.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from nerbatch import __version__
from nerbatch.documents import Document, DocumentError, expand_inputs, read_documents
from nerbatch.errors import OutputError
from nerbatch.records import entity_arrow_schema, error_record
from nerbatch.sinks import open_error_sink, open_sink, output_kind

WORK_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunOptions:
    inputs: Sequence[str]
    output: str
    fmt: str | None = None  # parquet | jsonl; None: from the output's extension
    errors: str | None = None  # error records (JSONL); None: <output>.errors.jsonl
    report: str | None = None
    id_field: str = "id"
    text_field: str = "text"
    keep_fields: Sequence[str] = ()
    max_doc_chars: int = 1_000_000
    max_error_rate: float = 0.01
    resume: bool = False
    batch_size: int = 256


@dataclass
class RunReport:
    inputs: list[str]
    output: str
    errors: str
    model: str
    docs_in: int = 0
    docs_ok: int = 0
    docs_failed: int = 0
    docs_without_entities: int = 0
    sentences: int = 0
    tokens: int = 0
    entities: int = 0
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    resumed_inputs: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.docs_failed / self.docs_in if self.docs_in else 0.0

    def add(self, counts: dict) -> None:
        for key in ("docs_in", "docs_ok", "docs_failed", "docs_without_entities", "sentences", "tokens", "entities"):
            setattr(self, key, getattr(self, key) + counts[key])

    def summary(self) -> str:
        return (
            f"{self.docs_in} docs ({self.docs_ok} ok, {self.docs_without_entities} without entities, "
            f"{self.docs_failed} failed), {self.sentences} sentences, {self.tokens} tokens, "
            f"{self.entities} entities in {self.seconds:.1f}s ({self.tokens_per_s:,.0f} tokens/s) -> {self.output}"
        )


class WorkFolder:
    """Per-input parts and the manifest of completed inputs, next to the output."""

    def __init__(self, output: str, fingerprint: dict, resume: bool) -> None:
        target = Path(output.rstrip("/" + os.sep))
        if not target.parent.is_dir():
            raise OutputError(f"cannot write {output!r}: folder {str(target.parent)!r} does not exist")
        self.path = target.parent / f".{target.name}.nerbatch-work"
        self.manifest_path = self.path / "manifest.json"
        self.fingerprint = fingerprint
        self.completed: dict[str, dict] = {}
        if self.path.exists() and resume:
            manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else {}
            if manifest.get("fingerprint") == fingerprint:
                self.completed = manifest.get("completed", {})
            elif manifest:
                raise OutputError(
                    f"cannot resume into {output!r}: the previous run used other inputs, fields or model; "
                    "rerun without --resume"
                )
        elif self.path.exists():
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write next to {output!r}: {exc.strerror or exc}") from None

    def mark_complete(self, source: str, entry: dict) -> None:
        self.completed[source] = entry
        staging = self.manifest_path.with_suffix(".tmp")
        with open(staging, "w", encoding="utf-8") as handle:
            json.dump({"version": WORK_FORMAT_VERSION, "fingerprint": self.fingerprint,
                       "completed": self.completed}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, self.manifest_path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _fingerprint(options: RunOptions, inputs: list[str], model: str) -> dict:
    def stat(path: str) -> list:
        info = os.stat(path)
        return [info.st_size, info.st_mtime_ns]

    return {
        "inputs": [[os.path.abspath(p), *stat(p)] for p in inputs],
        "model": model,
        "fields": [options.id_field, options.text_field, list(options.keep_fields)],
        "max_doc_chars": options.max_doc_chars,
    }


def run_job(options: RunOptions, pipeline=None, on_progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Run the batch job; returns the report (also written to ``options.report``)."""
    from nerbatch.bundle import load_bundle
    from nerbatch.pipeline import NerPipeline

    started = time.perf_counter()
    inputs = expand_inputs(list(options.inputs))
    fmt, to_folder = output_kind(options.output, options.fmt)
    errors_path = options.errors or options.output.rstrip("/" + os.sep) + ".errors.jsonl"
    schema = entity_arrow_schema(options.keep_fields)
    if pipeline is None:
        pipeline = NerPipeline(load_bundle(None), batch_size=options.batch_size)
    model = pipeline.model_name
    work = WorkFolder(options.output, _fingerprint(options, inputs, model), options.resume)
    report = RunReport(inputs=inputs, output=options.output, errors=errors_path, model=model)

    for number, source in enumerate(inputs):
        if source in work.completed:
            report.add(work.completed[source]["counts"])
            report.resumed_inputs.append(source)
            continue
        entry = _process_input(number, source, options, fmt, schema, pipeline, work, on_progress)
        work.mark_complete(source, entry)
        report.add(entry["counts"])

    report.seconds = round(time.perf_counter() - started, 3)
    report.tokens_per_s = round(report.tokens / report.seconds, 1) if report.seconds else 0.0
    metadata = {
        "model": model,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": json.dumps(inputs),
        "nerbatch_version": __version__,
        "docs_in": str(report.docs_in),
        "docs_failed": str(report.docs_failed),
    }
    _merge_parts(work, inputs, options.output, fmt, to_folder, schema, metadata)
    _merge_errors(work, inputs, errors_path)
    if options.report:
        Path(options.report).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    work.remove()
    return report


def _process_input(number, source, options, fmt, schema, pipeline, work, on_progress) -> dict:
    part = work.path / f"part-{number:05d}.{fmt}"
    errors_part = work.path / f"errors-{number:05d}.jsonl"
    failures: list[DocumentError] = []
    counts = dict.fromkeys(
        ("docs_in", "docs_ok", "docs_failed", "docs_without_entities", "sentences", "tokens", "entities"), 0
    )

    def documents():
        # Runs on the pipeline's reader thread; list.append is atomic.
        for item in read_documents(
            source, id_field=options.id_field, text_field=options.text_field,
            keep_fields=options.keep_fields, max_doc_chars=options.max_doc_chars,
        ):
            if isinstance(item, Document):
                yield item
            else:
                failures.append(item)

    sink = open_sink(part, fmt, schema=schema, metadata={"source": source}, dataset=False)
    with sink, open_error_sink(errors_part) as error_sink:
        for chunk in pipeline.annotate(documents()):
            sink.write(chunk.record_columns(pipeline.model_name, options.keep_fields))
            per_doc = chunk.entities_per_document()
            counts["docs_ok"] += len(chunk.documents)
            counts["docs_without_entities"] += int((per_doc == 0).sum())
            counts["sentences"] += chunk.sentences
            counts["tokens"] += chunk.tokens
            counts["entities"] += len(chunk)
            drained, failures[:] = failures[:], []
            counts["docs_failed"] += len(drained)
            error_sink.write_records(error_record(e) for e in drained)
            if on_progress:
                on_progress(len(chunk.documents) + len(drained), chunk.tokens)
        drained = list(failures)
        counts["docs_failed"] += len(drained)
        error_sink.write_records(error_record(e) for e in drained)
        if on_progress and drained:
            on_progress(len(drained), 0)
    counts["docs_in"] = counts["docs_ok"] + counts["docs_failed"]
    return {"part": part.name, "errors_part": errors_part.name, "counts": counts}


def _merge_parts(work, inputs, output, fmt, to_folder, schema, metadata) -> None:
    parts = [work.path / work.completed[s]["part"] for s in inputs]
    # overwrite only concerns a folder: its part files are this run's to replace
    with open_sink(output, fmt, schema=schema, metadata=metadata, dataset=to_folder, overwrite=to_folder) as sink:
        _copy_parts(parts, sink, fmt)


def _copy_parts(parts, sink, fmt) -> None:
    for part in parts:
        if fmt == "parquet":
            for batch in pq.ParquetFile(part).iter_batches(batch_size=65_536):
                sink.write({name: batch.column(name) for name in batch.schema.names})
        else:
            _copy_jsonl(part, sink)


def _copy_jsonl(part: Path, sink) -> None:
    with open(part, encoding="utf-8") as handle:
        batch = []
        for line in handle:
            batch.append(json.loads(line))
            if len(batch) >= 10_000:
                sink.write_records(batch)
                batch = []
        sink.write_records(batch)


def _merge_errors(work, inputs, errors_path) -> None:
    with open_error_sink(errors_path) as sink:
        for source in inputs:
            _copy_jsonl(work.path / work.completed[source]["errors_part"], sink)
