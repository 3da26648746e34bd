"""The batch job: input files -> pipeline -> entity records, with nothing lost.

Every input file is processed into its own part (entity records plus error
records) inside a work folder next to the output, and recorded as complete in
that folder's journal only once its parts are durably in place. When every
input is done the parts are merged into the output (a file, or a folder of
part files), which appears atomically, and the work folder is removed. A crash
leaves no output that looks complete; ``resume=True`` reuses the completed
parts, so the rerun finishes the work without duplicates. The inputs still to do
are read as one stream, so prediction batches span small files.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import glob
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from nerbatch import __version__
from nerbatch.documents import DocumentError, expand_inputs, generated_id_prefix, read_documents, reason_kind
from nerbatch.errors import NerbatchError, OutputError, ResumeRefusedError
from nerbatch.records import entity_arrow_schema, error_record, outcome_arrow_schema, outcome_columns
from nerbatch.sinks import (
    check_dataset_folder,
    check_spared,
    check_writable,
    finish_interrupted_publish,
    open_error_sink,
    open_sink,
    output_kind,
    split_beside,
    write_text_atomic,
)

if TYPE_CHECKING:
    from nerbatch.pipeline import AnnotatedChunk

WORK_FORMAT_VERSION = 4  # 4: entries record their parts' sha256
PART_KEYS = ("part", "errors_part", "outcomes_part")  # a completed input's files in the work folder
# Error kinds that stop reading a file (or a parquet row group) early: the
# documents they cover were never seen, so their number is unknown.
_BREAK_KINDS = frozenset({"corrupt_file", "duplicate_column", "not_jsonl", "read_error"})


class RunConfigError(NerbatchError, ValueError):
    """A run option that cannot work (one line, before any input is read)."""


@dataclass(frozen=True)
class RunOptions:
    """A batch job's settings.  Paths are ``str`` or ``os.PathLike`` (a folder output needs a ``str`` ending
    in ``/`` when the folder does not exist yet, as ``pathlib`` drops that slash)."""

    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]  # one pattern, file or folder, or several
    output: str
    fmt: str | None = None  # parquet | jsonl; None: from the output's extension
    errors: str | None = None  # error records (JSONL); None: _<output name>.errors.jsonl beside it
    outcomes: str | None = None  # one outcome row per document (.parquet or .jsonl); None: not written
    report: str | None = None
    id_field: str = "id"
    text_field: str = "text"
    keep_fields: Sequence[str] = ()
    max_doc_chars: int = 1_000_000
    max_error_rate: float = 0.01
    resume: bool = False
    batch_size: int = 256
    model: str | None = None  # bundle folder; None: the shipped model (ignored when run_job gets a pipeline)

    def __post_init__(self) -> None:
        for name in ("output", "errors", "outcomes", "report", "model"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))

    def validate(self) -> None:
        """Raise :class:`RunConfigError` for option values that cannot work."""
        if isinstance(self.keep_fields, str):
            raise RunConfigError(f"keep_fields must be a list of field names, got the string {self.keep_fields!r}")
        for name in ("id_field", "text_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise RunConfigError(f"{name} ({_option(name)}) must be a non-blank field name, got {value!r}")
        for name in ("max_doc_chars", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RunConfigError(f"{name} ({_option(name)}) must be a positive integer, got {value!r}")
        rate = self.max_error_rate
        if not isinstance(rate, (int, float)) or math.isnan(rate) or not 0 <= rate <= 1:
            raise RunConfigError(f"max_error_rate (--max-error-rate) must be a fraction from 0 to 1, got {rate!r}")


def _option(name: str) -> str:
    """The command-line option of a RunOptions field: messages serve the library and the CLI alike."""
    return "--" + name.replace("_", "-")


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
    seconds: float = 0.0  # the whole job
    model_load_seconds: float = 0.0
    tokens_per_s: float = 0.0  # of the inputs read in this run, model loading not included
    # Documents read whose id was generated (no id field), and per kept field those without it (or null):
    # equal to docs_ok, they point at a misspelt --id-field or --keep-fields.
    # None: an input resumed from a run of an earlier nerbatch, which did not count them.
    docs_with_generated_id: int | None = 0
    kept_fields_missing: dict[str, int] | None = field(default_factory=dict)
    # Failed documents per reason kind (missing_text, malformed_json...); None as above.
    docs_failed_by_kind: dict[str, int] | None = field(default_factory=dict)
    # Inputs of the same file name in different folders whose documents without an id got generated ids
    # of the same form (<file name>:<line or row>): their records may share doc_ids.
    generated_id_clashes: list[list[str]] = field(default_factory=list)
    resumed_inputs: list[str] = field(default_factory=list)
    # Inputs not read to their end (truncated gzip, corrupt parquet row group...):
    # they hold documents that no record or error stands for one by one.
    incomplete_inputs: list[str] = field(default_factory=list)
    outcomes: str | None = None

    @property
    def error_rate(self) -> float:
        return self.docs_failed / self.docs_in if self.docs_in else 0.0

    def failed(self, max_error_rate: float) -> str | None:
        """Why the run counts as failed (exit code 1), or None."""
        if self.incomplete_inputs:
            return (
                f"{len(self.incomplete_inputs)} input(s) could not be read to the end "
                f"({', '.join(self.incomplete_inputs[:3])}{', ...' if len(self.incomplete_inputs) > 3 else ''}); "
                f"see {self.errors}"
            )
        if self.error_rate > max_error_rate:
            return (
                f"{self.docs_failed} of {self.docs_in} documents failed "
                f"({self.error_rate:.2%} > max error rate {max_error_rate:.2%}); see {self.errors}"
            )
        return None

    def add(self, counts: dict) -> None:
        for key in ("docs_in", "docs_ok", "docs_failed", "docs_without_entities", "sentences", "tokens", "entities"):
            setattr(self, key, getattr(self, key) + counts[key])
        if "docs_failed_by_kind" not in counts or self.docs_failed_by_kind is None:
            self.docs_failed_by_kind = None
        else:
            for kind, failed in counts["docs_failed_by_kind"].items():
                self.docs_failed_by_kind[kind] = self.docs_failed_by_kind.get(kind, 0) + failed
        if "docs_with_generated_id" not in counts or self.docs_with_generated_id is None:
            self.docs_with_generated_id = self.kept_fields_missing = None
            return
        self.docs_with_generated_id += counts["docs_with_generated_id"]
        for name, missing in counts["kept_fields_missing"].items():
            self.kept_fields_missing[name] = self.kept_fields_missing.get(name, 0) + missing

    def field_warnings(self, id_field: str, id_field_given: bool, text_field: str = "text") -> list[str]:
        """What looks like a misspelt field: one no document read had (only an id field that was asked for:
        documents without ids are common, and get generated ones)."""
        no_text = (self.docs_failed_by_kind or {}).get("missing_text", 0)
        if no_text and not self.docs_ok:
            return [f"no document has the text field {text_field!r} ({no_text} failed as missing_text): is it spelt "
                    "as in the documents? Name it with --text-field (a nested field is not read: flatten it first)"]
        if not self.docs_ok or self.docs_with_generated_id is None:
            return []
        warnings = [f"no document has the kept field {name!r}: it is null in every record; is it spelt as in "
                    "the documents?" for name, missing in self.kept_fields_missing.items() if missing == self.docs_ok]
        if id_field_given and self.docs_with_generated_id == self.docs_ok:
            warnings.insert(0, f"no document has the id field {id_field!r}: every id was generated as "
                               "<file name>:<line or row>; is it spelt as in the documents?")
        warnings += [f"documents without an id in {', '.join(map(repr, clash))} got generated ids of the same form "
                     f"({generated_id_prefix(clash[0])}:<line or row>), so their records may share doc_ids; give the "
                     "documents ids (--id-field) or the files distinct names" for clash in self.generated_id_clashes]
        return warnings

    def summary(self) -> str:
        return (
            f"{self.docs_in} docs ({self.docs_ok} ok, {self.docs_without_entities} without entities, "
            f"{self.docs_failed} failed), {self.sentences} sentences, {self.tokens} tokens, "
            f"{self.entities} entities in {self.seconds:.1f}s ({self.model_load_seconds:.1f}s loading the model, "
            f"{self.tokens_per_s:,.0f} tokens/s"
            + (f" over the inputs done now; {len(self.resumed_inputs)} resumed" if self.resumed_inputs else "")
            + f") -> {self.output}"
        )


class WorkFolder:
    """Per-input parts and the record of completed inputs, next to the output.

    ``manifest.json`` holds the run's fingerprint and is written once, when the
    run starts; each completed input then appends one fsynced line to
    ``completed.jsonl``, so recording progress costs the same for the ten
    thousandth input as for the first.  A line torn by a crash is ignored on
    resume (that input is done again).  The folder's lock file is held for the
    whole run, so a second run writing the same output (an overlapping cron
    job) stops at once instead of deleting the first one's parts.
    """

    def __init__(self, output: str) -> None:
        self.output = output
        self.path = work_folder_path(output)
        if not self.path.parent.is_dir():
            raise OutputError(f"cannot write {output!r}: folder {str(self.path.parent)!r} does not exist")
        self.manifest_path = self.path / "manifest.json"
        self.journal_path = self.path / "completed.jsonl"
        self.completed: dict[str, dict] = {}
        self._journal = None  # open from a successful begin() on
        try:
            self.path.mkdir(exist_ok=True)
            self._lock = open(self.path / "lock", "a")  # noqa: SIM115 - released in release()
        except OSError as exc:
            raise OutputError(f"cannot write next to {output!r}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise OutputError(f"another nerbatch run is writing {output!r}; wait for it to finish") from None

    def begin(self, fingerprint: dict, resume: bool) -> None:
        """Take over a matching interrupted run's finished inputs (``resume``), else start empty."""
        manifest = {}
        if resume and self.manifest_path.is_file():
            try:
                manifest = json.loads(self.manifest_path.read_text())
            except (ValueError, OSError):  # damaged: nothing it lists can be trusted, so start afresh
                manifest = {}
            manifest = manifest if isinstance(manifest, dict) else {}
        if manifest.get("version") == WORK_FORMAT_VERSION and manifest.get("fingerprint") == fingerprint:
            # An entry whose parts are gone (a kill while a finished run removed this folder) or damaged
            # is done again rather than merged from nothing.
            self.completed = {
                source: entry for source, entry in self._read_journal().items() if self._parts_intact(entry)
            }
            # Rewritten whole, so that no line is appended to one a crash tore.
            self._record(lambda: write_text_atomic(self.journal_path, "".join(
                _journal_line(source, entry) for source, entry in self.completed.items())))
        elif manifest.get("version") == WORK_FORMAT_VERSION:
            raise ResumeRefusedError(
                f"cannot resume into {self.output!r}: the previous run used other inputs, fields, format or model; "
                + _start_afresh(self.path)
            )
        else:  # a fresh start, or the folder of an older nerbatch: done again
            self.manifest_path.unlink(missing_ok=True)  # first: it must never outlive the parts it lists
            for entry in self.path.iterdir():
                if entry.name != "lock":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            self._record(lambda: write_text_atomic(self.manifest_path, json.dumps(
                {"version": WORK_FORMAT_VERSION, "fingerprint": fingerprint})))
        self._journal = self._record(lambda: open(self.journal_path, "a", encoding="utf-8"))  # noqa: SIM115

    def _parts_intact(self, entry: dict) -> bool:
        digests = entry.get("sha256", {})
        try:
            return all(_sha256(self.path / entry[key]) == digests.get(key) for key in PART_KEYS if entry.get(key))
        except OSError:
            return False

    def part_digests(self, entry: dict) -> dict:
        """The sha256 of a finished input's parts, for ``entry["sha256"]``."""
        return self._record(lambda: {key: _sha256(self.path / entry[key]) for key in PART_KEYS if entry.get(key)})

    def _read_journal(self) -> dict[str, dict]:
        completed = {}
        with contextlib.suppress(FileNotFoundError), open(self.journal_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    source, entry = json.loads(line)
                except ValueError:  # torn by a crash while it was appended
                    continue
                if not isinstance(entry, dict):
                    continue
                completed[os.path.realpath(source)] = entry
        return completed

    def _record(self, write: Callable):
        try:
            return write()
        except OSError as exc:
            raise OutputError(f"cannot record progress in {str(self.path)!r}: {exc.strerror or exc}") from None

    def mark_complete(self, source: str, entry: dict) -> None:
        source = os.path.realpath(source)

        def append() -> None:
            self._journal.write(_journal_line(source, entry))
            self._journal.flush()
            os.fsync(self._journal.fileno())

        self._record(append)
        self.completed[source] = entry

    def finished(self, source: str) -> dict | None:
        """A finished input's entry, however its path is written: keyed, as the resume fingerprint's inputs
        are, by its real path (``..`` and symbolic links resolved), which no other input shares. Unless
        the name it is given now differs: ids generated for documents without one are named after it."""
        entry = self.completed.get(os.path.realpath(source))
        if entry is not None and entry.get("id_prefix") != generated_id_prefix(source):
            return None
        return entry

    def release(self) -> None:
        """Let another run take the folder; finished parts stay for ``resume``."""
        if self._lock.closed:
            return
        begun = self._journal is not None
        self._close_journal()
        if self.path.is_dir() and not self.completed and (
                begun or {e.name for e in self.path.iterdir()} <= {"lock"}):
            shutil.rmtree(self.path, ignore_errors=True)  # nothing finished: leave no trace
        self._lock.close()

    def remove(self) -> None:
        self._close_journal()
        self.manifest_path.unlink(missing_ok=True)  # first, as in begin()
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()

    def _close_journal(self) -> None:
        if self._journal is not None:
            with contextlib.suppress(OSError):
                self._journal.close()
            self._journal = None


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _journal_line(source: str, entry: dict) -> str:
    return json.dumps([source, entry]) + "\n"


def _fingerprint(options: RunOptions, inputs: list[str], model: str) -> dict:
    def stat(path: str) -> list:
        try:
            info = os.stat(path)
        except OSError:  # gone since it was listed: its read fails and is reported as an error record
            return [None, None]
        return [info.st_size, info.st_mtime_ns]

    fmt, to_folder = output_kind(options.output, options.fmt)
    return {
        "inputs": [[os.path.realpath(p), *stat(p)] for p in inputs],
        "model": model,
        "fields": [options.id_field, options.text_field, list(options.keep_fields)],
        "max_doc_chars": options.max_doc_chars,
        "output": [fmt, to_folder],
        "outcomes": _outcomes_format(options),
    }


def _outcomes_format(options: RunOptions) -> str | None:
    if not options.outcomes:
        return None
    try:
        return output_kind(options.outcomes, None, dataset=False)[0]
    except OutputError:
        raise OutputError(f"--outcomes {options.outcomes!r}: name a .parquet, .jsonl or .jsonl.gz file") from None


def _named_output(output: str) -> str:
    """``output`` without a trailing slash, and resolved where its last part is no name (``.``, ``out/..``):
    the files named after it go beside the folder, not into it as ``_..errors.jsonl``."""
    stripped = output.rstrip("/" + os.sep)
    if os.path.basename(stripped) in ("", ".", ".."):
        return os.path.realpath(output)
    return stripped


def _errors_path(options: RunOptions) -> str:
    if not options.errors:
        # "_" first: pyarrow, pandas and Spark skip the file when they read the output's folder as a dataset
        parent, name = os.path.split(_named_output(options.output))
        return os.path.join(parent, f"_{name}.errors.jsonl")
    try:
        fmt = output_kind(options.errors, None, dataset=False)[0]
    except OutputError:
        fmt = None
    if fmt != "jsonl":  # a loader globbing *.parquet must not meet JSON lines
        raise OutputError(f"--errors {options.errors!r}: error records are JSON lines; name a .jsonl or .jsonl.gz file")
    return options.errors


def work_folder_path(output: str) -> Path:
    """The hidden folder next to ``output`` that holds a run's parts until they are merged."""
    target = Path(_named_output(output))
    return target.parent / f".{target.name}.nerbatch-work"


def _identity(path: str) -> tuple:
    """What makes two paths one file: device and inode when it exists (hard links too), else the real path."""
    try:
        info = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", info.st_dev, info.st_ino)


def _check_paths(inputs: list[str], output: str, to_folder: bool, errors: str, outcomes: str | None,
                 report: str | None, model: str) -> None:
    """Refuse outputs that would overwrite an input, the model or each other, or cannot be written
    (``OutputError``)."""
    input_ids = {_identity(p): p for p in inputs}
    named = [("output", output), ("errors file", errors)]
    named += [("outcomes file", outcomes)] if outcomes else []
    named += [("report", report)] if report else []
    seen: dict[tuple, str] = {}
    for what, path in named:
        identity = _identity(path)
        if identity in input_ids:
            raise OutputError(f"the {what} {path!r} is also an input; nerbatch never overwrites its inputs")
        if identity in seen:
            raise OutputError(f"the {what} {path!r} is also the {seen[identity]}; give them different paths")
        seen[identity] = what
    work = os.path.realpath(work_folder_path(output))
    for what, path in [("input", p) for p in inputs] + named[1:]:
        if os.path.realpath(path).startswith(work + os.sep):
            raise OutputError(f"the {what} {path!r} is inside {str(work_folder_path(output))!r}, "
                              "which the run deletes when it ends")
    if to_folder:
        check_spared(output, "output folder", {"model": model})
        folder = os.path.realpath(output)
        inside = [p for p in inputs if os.path.dirname(os.path.realpath(p)) == folder]
        if inside:
            raise OutputError(
                f"the output folder {output!r} holds input {inside[0]!r}, whose part files the output would "
                "replace; write the records to another folder"
            )
        for what, path in named[1:]:
            if os.path.realpath(path).startswith(folder + os.sep):
                raise OutputError(f"the {what} {path!r} is inside the output folder {output!r}, whose files "
                                  "parquet readers take for entity records; write it elsewhere")
        bare = output.rstrip("/" + os.sep) or output  # "name/" hides a file called name
        if os.path.exists(bare) and not os.path.isdir(bare):
            raise OutputError(f"cannot write the output folder {output!r}: a file has that name")
        if os.path.isdir(bare) and not os.access(bare, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write the output folder {output!r}: it is not writable")
    else:
        check_writable(output, "output", spare={"model": model})
    for what, path in named[1:]:
        check_writable(path, what, spare={"model": model})


def _remove_stale_temps(paths: list[str], folder: str | None, inputs: list[str]) -> None:
    """Temp files a killed run left next to this run's outputs (the work folder's lock is held)."""
    keep = {_identity(p) for p in inputs}
    leftovers = []
    for path in paths:
        directory, name = split_beside(path)
        leftovers += Path(directory).glob(f".{glob.escape(name)}.tmp-*")
    if folder and os.path.isdir(folder):
        # staged parts (.part-N.ext.tmp-staged-PID) and the temp files they are written through (..part-...)
        leftovers += Path(folder).glob(".part-[0-9][0-9][0-9][0-9][0-9].*.tmp-*")
        leftovers += Path(folder).glob("..part-[0-9][0-9][0-9][0-9][0-9].*.tmp-*")
    for leftover in leftovers:
        if _identity(str(leftover)) not in keep:
            leftover.unlink(missing_ok=True)


def run_job(options: RunOptions, pipeline=None, on_progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Run the batch job; returns the report (also written to ``options.report``).

    ``on_progress(docs, tokens)`` is called with ``(0, 0)`` once the model has loaded (rates count
    from there), then with the documents and tokens each chunk adds.
    """
    from nerbatch.bundle import default_model_path, load_bundle
    from nerbatch.pipeline import NerPipeline

    if pipeline is not None and not isinstance(pipeline, NerPipeline):
        raise TypeError(f"run_job takes a NerPipeline, not {type(pipeline).__name__}; "
                        "use run_job(options, NerPipeline(bundle)) or leave it out to load options.model")
    started = time.perf_counter()
    options.validate()
    inputs = expand_inputs(options.inputs)
    fmt, to_folder = output_kind(options.output, options.fmt)
    errors_path = _errors_path(options)
    outcomes_fmt = _outcomes_format(options)
    _check_paths(inputs, options.output, to_folder, errors_path, options.outcomes, options.report,
                 options.model or str(default_model_path()))
    schema = entity_arrow_schema(options.keep_fields)
    if to_folder:
        check_dataset_folder(options.output, schema)
    work = WorkFolder(options.output)  # locked before the model loads: an overlapping run stops at once
    try:
        if pipeline is None:
            pipeline = NerPipeline(load_bundle(options.model), batch_size=options.batch_size)
        model = pipeline.model_name
        loaded = time.perf_counter()
        if on_progress:
            on_progress(0, 0)
        work.begin(_fingerprint(options, inputs, model), options.resume)
        if to_folder and os.path.isdir(options.output):
            finish_interrupted_publish(options.output)  # before its staged parts look stale
        _remove_stale_temps([options.output, errors_path, *[p for p in (options.outcomes, options.report) if p]],
                            options.output if to_folder else None, inputs)
        report = RunReport(inputs=inputs, output=options.output, errors=errors_path, model=model,
                           outcomes=options.outcomes)
        pending = []
        for number, source in enumerate(inputs):
            if work.finished(source) is None:
                pending.append(_InputWork(number, source, options, fmt, outcomes_fmt, schema, work))
            else:
                report.resumed_inputs.append(source)
        tokens_read = _annotate_inputs(pending, pipeline, work, on_progress)
        with_generated_ids: dict[str, list[str]] = {}
        for source in inputs:
            entry = work.finished(source)
            report.add(entry["counts"])
            if entry["incomplete"]:
                report.incomplete_inputs.append(source)
            if entry["counts"].get("docs_with_generated_id"):
                with_generated_ids.setdefault(generated_id_prefix(source), []).append(source)
        report.generated_id_clashes = [same for same in with_generated_ids.values() if len(same) > 1]

        now = time.perf_counter()
        report.seconds = round(now - started, 3)
        report.model_load_seconds = round(loaded - started, 3)
        report.tokens_per_s = round(tokens_read / (now - loaded), 1) if now > loaded else 0.0
        metadata = {
            "model": model,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": json.dumps(inputs),
            "nerbatch_version": __version__,
            "docs_in": str(report.docs_in),
            "docs_failed": str(report.docs_failed),
        }
        # The output last: a reader that waits for it never finds it beside an earlier run's errors.
        _merge_errors(work, inputs, errors_path)
        if options.outcomes:
            with open_sink(options.outcomes, outcomes_fmt, schema=outcome_arrow_schema(), metadata=metadata,
                           dataset=False) as sink:
                _copy_parts([work.path / work.finished(s)["outcomes_part"] for s in inputs], sink, outcomes_fmt,
                            sources=inputs)
        _merge_parts(work, inputs, options.output, fmt, to_folder, schema, metadata)
        work.remove()
    finally:
        work.release()  # a failed run keeps its finished parts for --resume
    if options.report:
        try:
            write_text_atomic(options.report, json.dumps(asdict(report), indent=2) + "\n")
        except OSError as exc:
            raise OutputError(
                f"records are in {options.output!r}, but the report {options.report!r} cannot be written: "
                f"{exc.strerror or exc}"
            ) from None
    return report


class _InputWork:
    """One input file's parts in the work folder: open while its documents are written, then its journal entry."""

    def __init__(self, number, source, options, fmt, outcomes_fmt, schema, work) -> None:
        self.source = source
        # Named so that no data glob matches them: DuckDB and polars descend into hidden folders, and a
        # lake read as `**/part-*.parquet` must not take a run's unpublished records for published ones.
        self.part = work.path / f"records-{number:05d}.{fmt}.work"
        self.errors_part = work.path / f"errors-{number:05d}.jsonl.work"
        self.outcomes_part = work.path / f"outcomes-{number:05d}.{outcomes_fmt}.work" if outcomes_fmt else None
        self.incomplete = False  # set while the file is read (on the pipeline's reader thread)
        self.counts = dict.fromkeys(
            ("docs_in", "docs_ok", "docs_failed", "docs_without_entities", "sentences", "tokens", "entities",
             "docs_with_generated_id"), 0
        )
        self.counts["kept_fields_missing"] = dict.fromkeys(options.keep_fields, 0)
        self.counts["docs_failed_by_kind"] = {}
        self._options, self._fmt, self._outcomes_fmt, self._schema, self._work = (
            options, fmt, outcomes_fmt, schema, work)
        self._sinks: list = []

    def documents(self):
        options = self._options
        for item in read_documents(
            self.source, id_field=options.id_field, text_field=options.text_field,
            keep_fields=options.keep_fields, max_doc_chars=options.max_doc_chars,
        ):
            if isinstance(item, DocumentError):
                self.incomplete = self.incomplete or reason_kind(item.reason) in _BREAK_KINDS
            yield item

    def open(self) -> None:
        self._sinks = []
        try:
            self._sinks.append(open_sink(self.part, self._fmt, schema=self._schema, metadata={"source": self.source},
                                         dataset=False))
            self._sinks.append(open_error_sink(self.errors_part))
            if self.outcomes_part:
                self._sinks.append(open_sink(self.outcomes_part, self._outcomes_fmt, schema=outcome_arrow_schema(),
                                             dataset=False))
        except BaseException:
            self.abort()
            raise
        self._sink, self._error_sink = self._sinks[:2]
        self._outcome_sink = self._sinks[2] if self.outcomes_part else None

    def write(self, chunk: AnnotatedChunk, model: str) -> None:
        """Write a chunk of this input's documents and failures."""
        counts = self.counts
        self._sink.write(chunk.record_columns(model, self._options.keep_fields))
        per_doc = chunk.entities_per_document()
        counts["docs_ok"] += len(chunk.documents)
        counts["docs_without_entities"] += int((per_doc == 0).sum())
        counts["sentences"] += chunk.sentences
        counts["tokens"] += chunk.tokens
        counts["entities"] += len(chunk)
        counts["docs_failed"] += len(chunk.failed)
        for error in chunk.failed:
            kind = reason_kind(error.reason)
            counts["docs_failed_by_kind"][kind] = counts["docs_failed_by_kind"].get(kind, 0) + 1
        counts["docs_with_generated_id"] += sum(d.generated_id for d in chunk.documents)
        missing = counts["kept_fields_missing"]
        for name in missing:
            missing[name] += sum(d.fields[name] is None for d in chunk.documents)
        self._error_sink.write_records(error_record(e) for e in chunk.failed)
        if self._outcome_sink is not None:
            self._outcome_sink.write(outcome_columns(self.source, chunk.documents, per_doc.tolist(), chunk.failed,
                                                     model))

    def abort(self) -> None:
        """Discard the parts not committed."""
        for sink in self._sinks:
            sink.abort()

    def entry(self) -> dict:
        """Commit the parts; the journal entry that records them."""
        for sink in self._sinks:
            sink.close()
        self.counts["docs_in"] = self.counts["docs_ok"] + self.counts["docs_failed"]
        entry = {"part": self.part.name, "errors_part": self.errors_part.name, "counts": self.counts,
                 "incomplete": self.incomplete, "id_prefix": generated_id_prefix(self.source)}
        if self.outcomes_part:
            entry["outcomes_part"] = self.outcomes_part.name
        entry["sha256"] = self._work.part_digests(entry)
        return entry


def _complete_input(work: WorkFolder, current: _InputWork) -> None:
    work.mark_complete(current.source, current.entry())


def _annotate_inputs(pending: list[_InputWork], pipeline, work, on_progress) -> int:
    """Annotate the inputs as one stream, so prediction batches span small files; each input is completed
    (its parts committed and journalled) in input order once a later input's documents, or the end, show
    that it has no more. Returns the tokens read."""
    if not pending:
        return 0
    index_of = {p.source: i for i, p in enumerate(pending)}
    tokens_read = 0

    def documents():
        for input_work in pending:
            yield from input_work.documents()

    current = 0
    pending[0].open()
    try:
        for chunk in pipeline.annotate(documents()):
            for index, piece in _pieces_by_input(chunk, index_of):
                while current < index:
                    _complete_input(work, pending[current])
                    current += 1
                    pending[current].open()
                pending[current].write(piece, pipeline.model_name)
            tokens_read += chunk.tokens
            if on_progress:
                on_progress(len(chunk.documents) + len(chunk.failed), chunk.tokens)
        while True:
            _complete_input(work, pending[current])
            if current + 1 == len(pending):
                return tokens_read
            current += 1
            pending[current].open()
    except BaseException:
        pending[current].abort()
        raise


def _pieces_by_input(chunk: AnnotatedChunk, index_of: dict[str, int]):
    """``(input index, piece of the chunk)`` in input order: its documents and failures from each input."""
    doc_inputs = [index_of[d.source] for d in chunk.documents]
    failed: dict[int, list[DocumentError]] = {}
    for error in chunk.failed:
        failed.setdefault(index_of[error.source], []).append(error)
    first = 0
    for index in sorted(set(doc_inputs) | set(failed)):
        stop = bisect.bisect_right(doc_inputs, index, lo=first)
        piece = chunk.documents_slice(first, stop)
        piece.failed = failed.get(index, [])
        first = stop
        yield index, piece


def _merge_parts(work, inputs, output, fmt, to_folder, schema, metadata) -> None:
    parts = [work.path / work.finished(s)["part"] for s in inputs]
    # overwrite only concerns a folder: its part files are this run's to replace
    with open_sink(output, fmt, schema=schema, metadata=metadata, dataset=to_folder, overwrite=to_folder) as sink:
        _copy_parts(parts, sink, fmt)


def _copy_parts(parts, sink, fmt, sources=None) -> None:
    """Copy work parts into ``sink``; with ``sources``, each part's ``source`` column is set to its input
    as this run names it: a resumed input's parts name it as the interrupted run did, which may have
    written its path otherwise (absolute, through a link, from another folder)."""
    for number, part in enumerate(parts):
        source = None if sources is None else sources[number]
        if fmt == "parquet":
            for batch in _parquet_batches(part):
                columns = {name: batch.column(name) for name in batch.schema.names}
                if source is not None:
                    columns["source"] = pa.array([source] * batch.num_rows, batch.schema.field("source").type)
                sink.write(columns)
        else:
            _copy_jsonl(part, sink, source)


def _copy_jsonl(part: Path, sink, source: str | None = None) -> None:
    batch = []
    for record in _jsonl_records(part):
        if source is not None:
            record["source"] = source
        batch.append(record)
        if len(batch) >= 10_000:
            sink.write_records(batch)
            batch = []
    sink.write_records(batch)


# Readers of work parts: a part damaged after the run checked it is named in one line. Being
# generators, they never see the sink's own errors (a full disk), which are not the part's fault.

def _parquet_batches(part: Path):
    try:
        yield from pq.ParquetFile(os.path.join(os.getcwd(), part)).iter_batches(batch_size=1_024)  # the sink regroups them
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(part, exc) from None


def _jsonl_records(part: Path):
    try:
        with open(part, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)
    except (ValueError, OSError) as exc:
        raise _damaged(part, exc) from None


def _start_afresh(work_folder: Path) -> str:
    return f"rerun without --resume, or remove {str(work_folder)!r} to start afresh"


def _damaged(part: Path, exc: Exception) -> OutputError:
    detail = " ".join(str(exc).split())
    return OutputError(f"work part {str(part)!r} is damaged ({type(exc).__name__}: {detail}); "
                       + _start_afresh(part.parent))


def _merge_errors(work, inputs, errors_path) -> None:
    with open_error_sink(errors_path) as sink:
        for source in inputs:
            _copy_jsonl(work.path / work.finished(source)["errors_part"], sink, source)
