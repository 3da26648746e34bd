"""Record writers: parquet, JSONL and part-file datasets, all atomic.

Every sink is a context manager and writes to a hidden temporary file next to
its target (``.<name>.tmp-<pid>-<n>``).  On a clean ``close()`` (or a clean
exit from ``with``) the data is flushed, fsync'ed and the temporary file is
renamed over the target (``os.replace``: atomic on POSIX), then the folder is
fsync'ed.  If the ``with`` body raises, or :meth:`abort` is called, the
temporary file is removed and the target is left exactly as it was (absent, or
the previous run's file).  A sink that receives no rows still produces a
valid, empty output: a parquet file with the full schema and 0 rows, or an
empty JSONL file.

The fast path is columnar: ``write({"doc_id": [...], "start": [...], ...})``
with Python lists, numpy arrays or pyarrow arrays, all of the same length.
``write_records([{...}, ...])`` is a convenience that turns record dicts into
columns.  Columns not in the schema are rejected (``ValueError``) rather than
dropped; a missing column is filled with nulls when the field is nullable and
rejected otherwise.  These ``ValueError``/``TypeError`` exceptions flag caller
bugs; problems the user can cause (missing or unwritable output folder, disk
full...) raise :class:`~nerbatch.errors.OutputError`.

Choosing a sink: :func:`open_sink` (entity records) and
:func:`open_error_sink` (error records, always JSONL).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nerbatch.errors import OutputError
from nerbatch.records import RECORD_SCHEMA_METADATA_KEY, error_arrow_schema

__all__ = [
    "DEFAULT_PART_ROWS",
    "DEFAULT_ROW_GROUP_SIZE",
    "DatasetSink",
    "JsonlSink",
    "ParquetSink",
    "check_dataset_folder",
    "finish_interrupted_publish",
    "open_error_sink",
    "open_sink",
    "output_kind",
]

DEFAULT_ROW_GROUP_SIZE = 65_536
# A row group is also cut at this many bytes of Arrow data: rows carrying a large kept field
# (a 20 KB body on every entity) would otherwise buffer gigabytes before a row group was full.
DEFAULT_ROW_GROUP_BYTES = 64 * 2**20
DEFAULT_PART_ROWS = 1_000_000

_tmp_counter = itertools.count()


# --------------------------------------------------------------------------- helpers


def split_beside(path: str | os.PathLike) -> tuple[str, str]:
    """The absolute folder ``path`` is in, and its name. Not normalised as text: ``a/link/../b`` is in
    the folder the system finds (the parent of ``link``'s target), where its temporary file must be
    written to be renamed into place, not in ``a``."""
    head, name = os.path.split(os.fspath(path))
    return (os.path.join(os.getcwd(), head) if head else os.getcwd()), name


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` whole: readers (and a crash) see the old file or the new one.

    Written through ``.<name>.tmp-<pid>-<n>`` beside it, like the sinks' files.
    """
    directory, name = split_beside(path)
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}-{next(_tmp_counter)}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_parent(path: str) -> str:
    """Absolute folder ``path`` will be written in; ``OutputError`` if it can't be."""
    parent = split_beside(path)[0]
    if not os.path.exists(parent):
        raise OutputError(f"cannot write {path!r}: folder {parent!r} does not exist")
    if not os.path.isdir(parent):
        raise OutputError(f"cannot write {path!r}: {parent!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path!r}: folder {parent!r} is not writable")
    return parent


def check_writable(path: str | os.PathLike[str], what: str = "output",
                   spare: Mapping[str, str | os.PathLike[str]] | None = None) -> None:
    """``OutputError`` unless a file can be written at ``path``: checked before a long job starts.

    ``spare`` names what the job reads (``{"corpus": path, "model": folder}``): ``path`` must not
    be one of those files nor lie in one of those folders.
    """
    path = os.fspath(path)
    check_spared(path, what, spare or {})
    if os.path.isdir(path):
        raise OutputError(f"cannot write the {what} {path!r}: it is a folder")
    if path.endswith(("/", os.sep)):
        raise OutputError(f"cannot write the {what} {path!r}: the name ends in /, as a folder's does; give a file name")
    # The file is written beside its path and renamed over it, which would replace a link (such as
    # /dev/stdout), a device or a pipe with a plain file, for every process when run as root.
    if os.path.islink(path):
        raise OutputError(f"cannot write the {what} {path!r}: it is a symbolic link (to {os.readlink(path)!r}), "
                          "which the finished file would replace; give the path of a regular file")
    if os.path.exists(path) and not os.path.isfile(path):
        raise OutputError(f"cannot write the {what} {path!r}: it is not a regular file (a device, pipe or "
                          "socket); give the path of a regular file")
    parent = _check_parent(path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write the {what} {path!r}: the file is read-only")
    # The temporary file itself, created and removed: a name too long for it, a file system mounted
    # read-only or one that takes no files (/proc) would otherwise fail only once the work is done.
    probe = os.path.join(parent, f".{os.path.basename(path)}.tmp-{os.getpid()}-{next(_tmp_counter)}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with contextlib.suppress(FileNotFoundError):  # another run's clean-up of stale temporary files
            os.unlink(probe)
    except OSError as exc:
        detail = exc.strerror or str(exc)
        if exc.errno == errno.ENAMETOOLONG:
            longer = len(os.fsencode(os.path.basename(probe))) - len(os.fsencode(os.path.basename(path)))
            detail += f" (it is written through a temporary file whose name is {longer} bytes longer)"
        raise OutputError(f"cannot write the {what} {path!r}: {detail}") from None


def check_writable_folder(path: str | os.PathLike[str], what: str = "output folder") -> None:
    """Create the folder ``path`` if needed and write and remove a file in it; ``OutputError``
    (one line, naming the folder) if that fails.  Checked before a long job starts: a worker that
    finds out at its first part would retry forever, or fail with a traceback."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"cannot write the {what} {path!r}: it is not a folder")
    probe = os.path.join(path, f".nerbatch-probe-{os.getpid()}-{next(_tmp_counter)}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"probe")
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {path!r}: {exc.strerror or exc}") from None


def check_spared(path: str, what: str, spare: Mapping[str, str | os.PathLike[str]]) -> None:
    """``OutputError`` if ``path`` is one of the ``spare`` files or folders or lies inside one."""
    for name, kept in spare.items():
        if _is_or_inside(path, os.fspath(kept)):
            raise OutputError(f"the {what} {path!r} would overwrite the {name} {os.fspath(kept)!r}; write it elsewhere")


def _is_or_inside(path: str, kept: str) -> bool:
    real, kept_real = os.path.realpath(path), os.path.realpath(kept)
    if real == kept_real or real.startswith(kept_real + os.sep):
        return True
    try:
        return os.path.samefile(path, kept)  # hard links
    except OSError:
        return False


def _column_values(value: Any) -> list:
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return value.to_pylist()
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return tolist()
    return list(value)


def _column_lengths(columns: Mapping[str, Any]) -> int:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns have different lengths: {lengths}")
    return next(iter(lengths.values()), 0)


def _check_names(columns: Mapping[str, Any], schema: pa.Schema) -> None:
    unknown = [name for name in columns if schema.get_field_index(name) < 0]
    if unknown:
        raise ValueError(f"columns not in the output schema: {unknown}; expected some of {schema.names}")


def _records_to_columns(records: Iterable[Mapping[str, Any]], names: Sequence[str] | None) -> dict[str, list]:
    records = list(records)
    if names is None:
        names = list(dict.fromkeys(k for r in records for k in r))
    known = set(names)
    for r in records:
        extra = [k for k in r if k not in known]
        if extra:
            raise ValueError(f"record fields not in the output schema: {extra}; expected some of {list(names)}")
    return {name: [r.get(name) for r in records] for name in names}


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable")


def _metadata(schema: pa.Schema, metadata: Mapping[str, Any] | None) -> dict[str, str]:
    merged = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata keys must be non-empty strings, got {key!r}")
        if key.startswith("ARROW:"):
            raise ValueError(f"metadata key {key!r} is reserved by Arrow")
        merged[key] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return merged


# --------------------------------------------------------------------------- base


class _CommitOnExit:
    """Context manager protocol of every sink: close (commit) on success, abort on error."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.abort()
        else:
            self.close()
        return False


class _AtomicSink(_CommitOnExit):
    """Temp-file-then-rename lifecycle shared by the file sinks."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._done = True  # committed or aborted; True until there is a temp file to look after
        self.committed = False
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise OutputError(f"cannot write {self.path!r}: it is a folder")
        directory = _check_parent(self.path)
        name = os.path.basename(self.path)
        self.rows_written = 0
        self.closed = False
        self._dir = directory
        self.tmp_path = os.path.join(directory, f".{name}.tmp-{os.getpid()}-{next(_tmp_counter)}")
        self._done = False  # committed or aborted

    # subclass hooks
    def _finish(self) -> None:  # flush and close the temp file, data complete
        raise NotImplementedError

    def _drop(self) -> None:  # close the temp file without caring about its content
        raise NotImplementedError

    def write(self, columns: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def write_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write record dicts (convenience; :meth:`write` with columns is faster)."""
        raise NotImplementedError

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"sink for {self.path!r} is closed")

    def close(self) -> str:
        """Finish the file and move it into place; returns the final path. Idempotent."""
        if self._done:
            if not self.committed:
                raise ValueError(f"sink for {self.path!r} was aborted")
            return self.path
        try:
            self._finish()
            fd = os.open(self.tmp_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp_path, self.path)
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self.path!r}: {exc.strerror or exc}") from exc
        except BaseException:
            self.abort()
            raise
        self._done = self.closed = self.committed = True
        _fsync_dir(self._dir)
        return self.path

    def abort(self) -> None:
        """Discard everything written; the target path is left untouched. Idempotent."""
        if self._done:
            return
        self._done = True
        self.closed = True
        try:
            self._drop()
        except Exception:  # noqa: BLE001 - best effort, we are throwing it away
            pass
        try:
            os.remove(self.tmp_path)
        except FileNotFoundError:
            pass


    def __del__(self) -> None:  # never leave a temp file behind, never commit implicitly
        if not getattr(self, "_done", True):
            try:
                self.abort()
            except Exception:  # noqa: BLE001 - interpreter shutdown, nothing to report to
                pass


# --------------------------------------------------------------------------- parquet


class ParquetSink(_AtomicSink):
    """Typed parquet file: ``schema`` columns, row groups of ``row_group_size`` rows.

    ``metadata`` goes into the file's key-value metadata next to the schema's
    own metadata (``nerbatch.record_schema``); non-string values are stored as
    JSON text.  Rows are buffered until a full row group is ready: ``row_group_size``
    rows, or fewer once they hold ``row_group_bytes`` of Arrow data, so memory is
    bounded by one row group in rows and in bytes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: pa.Schema,
        metadata: Mapping[str, Any] | None = None,
        *,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        compression: str = "snappy",
    ) -> None:
        if row_group_size < 1 or row_group_bytes < 1:
            raise ValueError(f"row_group_size and row_group_bytes must be positive, got {row_group_size}, "
                             f"{row_group_bytes}")
        super().__init__(path)
        self.schema = schema.with_metadata(_metadata(schema, metadata))
        self.row_group_size = row_group_size
        self.row_group_bytes = row_group_bytes
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        try:
            # absolute: pyarrow reads a relative "day-T10:00/…" as a URI
            self._writer = pq.ParquetWriter(self.tmp_path, self.schema, compression=compression)
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self.path!r}: {exc.strerror or exc}") from exc

    def _batch(self, columns: Mapping[str, Any]) -> pa.RecordBatch:
        _check_names(columns, self.schema)
        n = _column_lengths(columns)
        arrays = []
        for field in self.schema:
            if field.name in columns:
                value = columns[field.name]
                try:
                    if isinstance(value, pa.ChunkedArray):
                        value = value.combine_chunks()
                    if isinstance(value, pa.Array):
                        arr = value if value.type == field.type else value.cast(field.type)
                    else:
                        arr = pa.array(value, type=field.type)
                except (pa.ArrowException, TypeError, ValueError, UnicodeError) as exc:
                    raise ValueError(f"column {field.name!r} does not fit {field.type}: {exc}") from exc
                if not field.nullable and arr.null_count:
                    raise ValueError(f"column {field.name!r} is not nullable but holds {arr.null_count} null(s)")
            elif field.nullable:
                arr = pa.nulls(n, field.type)
            else:
                raise ValueError(f"column {field.name!r} is required but missing")
            arrays.append(arr)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def write(self, columns: Mapping[str, Any]) -> None:
        """Append rows given as ``{column name: values}``."""
        self._check_open()
        batch = self._batch(columns)
        if not batch.num_rows:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        self.rows_written += batch.num_rows
        if self._pending_bytes >= self.row_group_bytes:
            self._flush(final=True)  # every row held, as row groups of fewer rows
        elif self._pending_rows >= self.row_group_size:
            self._flush(final=False)

    def write_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.write(_records_to_columns(records, self.schema.names))

    def write_table(self, table: pa.Table | pa.RecordBatch) -> None:
        """Append an Arrow table/batch whose columns are a subset of the schema."""
        self.write({name: table.column(name) for name in table.schema.names})

    def _flush(self, *, final: bool) -> None:
        if not self._pending_rows:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        size = self.row_group_size
        full = (table.num_rows // size) * size
        cut = table.num_rows if final else full
        try:
            for start in range(0, cut, size):
                self._writer.write_table(table.slice(start, size), row_group_size=size)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path!r}: {exc.strerror or exc}") from exc
        rest = table.slice(cut)
        self._pending = rest.to_batches() if rest.num_rows else []
        self._pending_rows = rest.num_rows
        self._pending_bytes = rest.nbytes

    def _finish(self) -> None:
        self._flush(final=True)
        self._writer.close()

    def _drop(self) -> None:
        self._pending = []
        if self._writer is not None:
            self._writer.close()


# --------------------------------------------------------------------------- JSONL


class JsonlSink(_AtomicSink):
    """One JSON object per line (UTF-8, ``ensure_ascii=False``, ``\\n`` endings).

    With a ``schema``, keys follow the schema's column order, missing nullable
    columns are written as ``null`` and unknown columns are rejected; values are
    not type-checked beyond that.  Without one, records are written as given.
    A path ending in ``.gz`` is gzip-compressed (deterministic header).  NaN and
    infinities are rejected (``ValueError``): they are not JSON.  JSONL has no
    place for file metadata; record provenance in the records themselves
    (e.g. the ``model`` field) or use parquet.
    """

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema | None = None) -> None:
        super().__init__(path)
        self.schema = schema
        self._names = list(schema.names) if schema is not None else None
        self._required = {f.name for f in schema if not f.nullable} if schema is not None else set()
        self._raw = None
        self._fh = None
        try:
            self._raw = open(self.tmp_path, "wb")  # noqa: SIM115 - closed in _finish/_drop
            if self.path.lower().endswith(".gz"):
                self._fh = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
            else:
                self._fh = self._raw
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self.path!r}: {exc.strerror or exc}") from exc

    def write(self, columns: Mapping[str, Any]) -> None:
        """Append rows given as ``{column name: values}``."""
        self._check_open()
        n = _column_lengths(columns)
        if self._names is not None:
            _check_names(columns, self.schema)
            for name in self._required:
                if name not in columns:
                    raise ValueError(f"column {name!r} is required but missing")
            names = self._names
        else:
            names = list(columns)
        if not n:
            return
        cols = [_column_values(columns[name]) if name in columns else [None] * n for name in names]
        for name, values in zip(names, cols):
            if name in self._required and None in values:
                raise ValueError(f"column {name!r} is not nullable but holds null(s)")
        dumps = json.dumps
        lines = [
            dumps(dict(zip(names, row)), ensure_ascii=False, allow_nan=False, default=_json_default)
            for row in zip(*cols)
        ]
        self._write_text("\n".join(lines) + "\n")
        self.rows_written += n

    def write_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        if self._names is not None:
            self.write(_records_to_columns(records, self._names))
            return
        self._check_open()
        lines = [json.dumps(dict(r), ensure_ascii=False, allow_nan=False, default=_json_default) for r in records]
        if lines:
            self._write_text("\n".join(lines) + "\n")
            self.rows_written += len(lines)

    def _write_text(self, text: str) -> None:
        try:
            self._fh.write(text.encode("utf-8"))
        except OSError as exc:
            raise OutputError(f"cannot write {self.path!r}: {exc.strerror or exc}") from exc

    def _finish(self) -> None:
        self._fh.close()
        if self._raw is not self._fh:
            self._raw.close()

    def _drop(self) -> None:
        for f in (self._fh, self._raw):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


# --------------------------------------------------------------------------- datasets

_PART_SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl"}


def _is_part_file(name: str) -> bool:
    """Any name a dataset reader takes for a part, whoever wrote it."""
    return name.startswith("part-") and name.endswith((".parquet", ".jsonl", ".jsonl.gz"))


_OWN_PART = re.compile(r"part-\d{5}\.(?:parquet|jsonl)")


def _holds_records_of(jsonl_path: str, schema: pa.Schema) -> bool:
    """Whether a JSONL part is empty (as a run without records leaves it) or its first line opens with
    a record of ``schema``: the schema's required fields, in its order, as nerbatch writes them.

    Only the line's head is read: kept fields follow the required ones and may run to megabytes.
    """
    required = [f.name for f in schema if not f.nullable]
    try:
        with open(jsonl_path, "rb") as part:
            head = part.readline(1 << 20).decode("utf-8", errors="replace")
    except OSError:
        return False
    if not head:
        return True
    decode, space = json.JSONDecoder().raw_decode, json.decoder.WHITESPACE.match
    at = space(head, 0).end()
    for number, name in enumerate(required):
        if head[at:at + 1] != ("{" if number == 0 else ","):
            return False
        try:
            key, at = decode(head, space(head, at + 1).end())
            at = space(head, at).end()
            if key != name or head[at:at + 1] != ":":
                return False
            _, at = decode(head, space(head, at + 1).end())
        except ValueError:
            return False
        at = space(head, at).end()
    return head[at:at + 1] in (",", "}")


def _foreign_part(path: str, schema: pa.Schema) -> bool:
    """Whether a part file was not written by a DatasetSink of this record schema: another name
    pattern (Spark's ``part-00000-<uuid>.snappy.parquet``, say), or a parquet footer without
    this schema's ``nerbatch.record_schema`` tag."""
    name = os.path.basename(path)
    if not _OWN_PART.fullmatch(name):
        return True
    if not name.endswith(".parquet"):
        return not _holds_records_of(path, schema)
    ours = (schema.metadata or {}).get(RECORD_SCHEMA_METADATA_KEY.encode())
    try:
        theirs = (pq.read_schema(os.path.join(os.getcwd(), path)).metadata or {}).get(RECORD_SCHEMA_METADATA_KEY.encode())
    except (OSError, pa.ArrowException):
        return True
    return theirs != ours


def _refuse_foreign_parts(folder: str, parts: list[str], schema: pa.Schema) -> None:
    foreign = [p for p in parts if _foreign_part(p, schema)]
    if foreign:
        raise OutputError(
            f"output folder {folder!r} holds part files nerbatch did not write "
            f"({', '.join(os.path.basename(p) for p in foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
            "they are not replaced: remove them or choose another folder"
        )


def check_dataset_folder(folder: str | os.PathLike[str], schema: pa.Schema) -> None:
    """Refuse (``OutputError``) a folder a :class:`DatasetSink` with ``overwrite=True`` would refuse
    for its part files, so that a job can stop before its work rather than after it."""
    folder = os.fspath(folder)
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise OutputError(f"cannot read output folder {folder!r}: {exc.strerror or exc}") from None
    _refuse_foreign_parts(folder, [os.path.join(folder, n) for n in names if _is_part_file(n)], schema)


PUBLISH_PLAN = ".nerbatch-publish.json"  # in a dataset folder while its parts are being renamed into place


def _carry_out(folder: str, plan: Mapping[str, Any]) -> None:
    try:
        for staged, final in plan["renames"]:
            staged = os.path.join(folder, staged)
            if os.path.exists(staged):  # else renamed before an interruption
                os.replace(staged, os.path.join(folder, final))
        for old in plan["removes"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, old))
        _fsync_dir(folder)
        os.remove(os.path.join(folder, PUBLISH_PLAN))
        _fsync_dir(folder)
    except OSError as exc:
        raise OutputError(f"cannot put the parts in place in {folder!r}: {exc.strerror or exc}") from exc


def finish_interrupted_publish(folder: str | os.PathLike[str]) -> bool:
    """Complete the renames of a dataset folder whose publishing was interrupted (a crash, a full
    disk), so that it holds the new parts whole; True if there was one.  Done by every
    :class:`DatasetSink` opened on the folder, and before a run removes stale temporary files."""
    folder = os.fspath(folder)
    try:
        with open(os.path.join(folder, PUBLISH_PLAN), encoding="utf-8") as handle:
            plan = json.load(handle)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise OutputError(f"cannot read {PUBLISH_PLAN!r} in {folder!r} (an interrupted publish): {exc}") from None
    _carry_out(folder, plan)
    return True


class DatasetSink(_CommitOnExit):
    """A folder of part files ``part-00000.<ext>``, ``part-00001.<ext>``, ...

    A new part starts every ``part_rows`` rows; each part is written atomically
    by a :class:`ParquetSink` (or :class:`JsonlSink` for ``fmt="jsonl"``), with
    the same schema and metadata.  Names are deterministic: the same rows give
    the same files.  An empty run writes one empty ``part-00000``.  The folder
    is created if missing (its parent must exist).  A folder that already holds
    part files is refused (``OutputError``) unless ``overwrite=True``: mixing
    parts of two runs would corrupt the dataset.  Even then only parts this sink
    could have written are replaced; a folder holding others (another name
    pattern, or a parquet footer without this schema's record tag) is refused,
    so another writer's data is never deleted.  Parts are staged under hidden
    names (which dataset readers skip) and renamed into place only by
    :meth:`close`, which then removes the old parts the new ones did not
    replace; so until then readers see the old dataset whole, and a crash
    leaves it whole.  A crash during those renames is completed by the next
    sink opened on the folder (see :func:`finish_interrupted_publish`).  If
    the ``with`` body raises or :meth:`abort` is called, the staged parts are
    deleted (and the folder, if this sink created it and it is empty) and the
    old parts stay.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        schema: pa.Schema,
        metadata: Mapping[str, Any] | None = None,
        *,
        fmt: str = "parquet",
        part_rows: int = DEFAULT_PART_ROWS,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        overwrite: bool = False,
    ) -> None:
        if fmt not in _PART_SUFFIX:
            raise ValueError(f"fmt must be one of {sorted(_PART_SUFFIX)}, got {fmt!r}")
        if part_rows < 1:
            raise ValueError(f"part_rows must be positive, got {part_rows}")
        self.path = os.fspath(directory)
        self.schema = schema
        self.metadata = dict(metadata or {})
        self.fmt = fmt
        self.part_rows = part_rows
        self.row_group_size = row_group_size
        self.rows_written = 0
        self.paths: list[str] = []  # parts in place after close(), in order
        self._staged: list[tuple[str, str]] = []  # (staged file, final name) of completed parts
        self._final = ""  # final name of the part being written
        self.closed = False
        self.committed = False
        self._done = False
        self._current: _AtomicSink | None = None
        self._created = False
        self._publishing = False
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise OutputError(f"cannot write dataset {self.path!r}: it exists and is not a folder")
        if not os.path.isdir(self.path):
            _check_parent(self.path.rstrip("/" + os.sep))
            try:
                os.mkdir(self.path)
            except OSError as exc:
                raise OutputError(f"cannot create output folder {self.path!r}: {exc.strerror or exc}") from exc
            self._created = True
        elif not os.access(self.path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write dataset {self.path!r}: folder is not writable")
        else:
            finish_interrupted_publish(self.path)
        old = [os.path.join(self.path, n) for n in sorted(os.listdir(self.path)) if _is_part_file(n)]
        if old and not overwrite:
            raise OutputError(
                f"output folder {self.path!r} already holds part files ({os.path.basename(old[0])}...); "
                "remove them or choose another folder"
            )
        _refuse_foreign_parts(self.path, old, schema)
        self._old = old

    def _open_part(self) -> _AtomicSink:
        final = f"part-{len(self._staged):05d}{_PART_SUFFIX[self.fmt]}"
        staged = os.path.join(self.path, f".{final}.tmp-staged-{os.getpid()}")
        self._final = os.path.join(self.path, final)
        if self.fmt == "parquet":
            return ParquetSink(staged, self.schema, self.metadata, row_group_size=self.row_group_size)
        return JsonlSink(staged, self.schema)

    def _close_part(self) -> None:
        sink, self._current = self._current, None
        self._staged.append((sink.close(), self._final))

    def _publish(self) -> None:
        """Rename the staged parts into place, then remove the old parts they did not replace.

        The plan is written first (``PUBLISH_PLAN``), so that a crash between two renames, which
        leaves old and new parts side by side, is completed by the next sink opened on the folder
        (:func:`finish_interrupted_publish`) instead of leaving a mixed dataset."""
        kept = {final for _, final in self._staged}
        plan = {"renames": [[os.path.basename(staged), os.path.basename(final)] for staged, final in self._staged],
                "removes": [os.path.basename(old) for old in self._old if old not in kept]}
        try:
            write_text_atomic(os.path.join(self.path, PUBLISH_PLAN), json.dumps(plan))
        except OSError as exc:
            raise OutputError(f"cannot put the parts in place in {self.path!r}: {exc.strerror or exc}") from exc
        self._publishing = True  # from here on the staged parts belong to the plan
        _carry_out(self.path, plan)
        self.paths = [final for _, final in self._staged]

    def write(self, columns: Mapping[str, Any]) -> None:
        """Append rows given as ``{column name: values}``, rolling parts as they fill."""
        if self.closed:
            raise ValueError(f"dataset sink for {self.path!r} is closed")
        n = _column_lengths(columns)
        _check_names(columns, self.schema)
        start = 0
        while start < n:
            if self._current is None:
                self._current = self._open_part()
            room = self.part_rows - self._current.rows_written
            stop = min(n, start + room)
            self._current.write({k: v[start:stop] for k, v in columns.items()})
            self.rows_written += stop - start
            start = stop
            if self._current.rows_written >= self.part_rows:
                self._close_part()

    def write_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.write(_records_to_columns(records, self.schema.names))

    def close(self) -> list[str]:
        """Finish the last part (or write an empty one); returns the part paths."""
        if self._done:
            if not self.committed:
                raise ValueError(f"dataset sink for {self.path!r} was aborted")
            return self.paths
        try:
            if self._current is None and not self._staged:
                self._current = self._open_part()
            if self._current is not None:
                self._close_part()
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._done = self.closed = self.committed = True
        return self.paths

    def abort(self) -> None:
        """Discard the current part and delete the parts already written."""
        if self._done:
            return
        self._done = self.closed = True
        if self._current is not None:
            self._current.abort()
            self._current = None
        if self._publishing:
            return  # some parts are in place: the plan left in the folder completes the rest
        for staged, _ in self._staged:
            try:
                os.remove(staged)
            except FileNotFoundError:
                pass
        self._staged = []
        if self._created:
            try:
                os.rmdir(self.path)
            except OSError:
                pass



# --------------------------------------------------------------------------- choosing

_FORMATS = ("parquet", "jsonl")


def _is_folder_target(path: str) -> bool:
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    return path.endswith(seps) or os.path.isdir(path)


def _infer_format(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")):
        return "jsonl"
    raise OutputError(
        f"cannot tell the output format of {path!r} from its name: "
        "use .parquet, .jsonl or .jsonl.gz, a folder path ending in '/', or name the format"
    )


def output_kind(
    path: str | os.PathLike[str], fmt: str | None = None, dataset: bool | None = None
) -> tuple[str, bool]:
    """``(format, is_folder)`` that :func:`open_sink` chooses for ``path`` (same arguments)."""
    path = os.fspath(path)
    if path == "-":  # as other tools name standard output: a file named "-" would be a surprise
        raise OutputError("'-': outputs are files, not standard output; name a file (entities.jsonl, say)")
    if fmt is not None and fmt not in _FORMATS:
        raise OutputError(f"unknown output format {fmt!r}; expected one of {', '.join(_FORMATS)}")
    if dataset is None:
        dataset = _is_folder_target(path)
    if dataset:
        return fmt or "parquet", True
    if fmt is None:
        return _infer_format(path), False
    try:
        named = _infer_format(path)
    except OutputError:  # a name without a known extension takes the format given
        named = fmt
    if named != fmt:
        raise OutputError(f"{path!r} is named as a {named} file, not {fmt}: change its extension or the format")
    return fmt, False


def open_sink(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    schema: pa.Schema,
    metadata: Mapping[str, Any] | None = None,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    part_rows: int = DEFAULT_PART_ROWS,
    overwrite: bool = False,
    dataset: bool | None = None,
) -> ParquetSink | JsonlSink | DatasetSink:
    """Open the sink for an output path.

    * ``dataset=True``, or (when ``dataset`` is None) an existing folder or a
      path string ending in ``/``: :class:`DatasetSink` of ``fmt`` parts
      (parquet when ``fmt`` is None), ``part_rows`` rows per part.  Note that
      ``pathlib.Path`` drops a trailing ``/``: pass ``dataset=True`` for a
      folder that does not exist yet;
    * otherwise a single file: ``fmt`` or, when None, the extension decides
      (``.parquet``/``.pq`` -> :class:`ParquetSink`; ``.jsonl``, ``.ndjson``,
      optionally ``.gz`` -> :class:`JsonlSink`, which does not store metadata).

    ``dataset=False`` forces a single file even for a path ending in ``/``
    (which then fails: it names a folder).  An existing single file is
    replaced atomically on success.  Raises
    ``OutputError`` (one line) for an unknown format, a missing or unwritable
    parent folder, or a dataset folder already holding parts (without
    ``overwrite``).
    """
    path = os.fspath(path)
    fmt, dataset = output_kind(path, fmt, dataset)
    if dataset:
        return DatasetSink(
            path,
            schema,
            metadata,
            fmt=fmt,
            part_rows=part_rows,
            row_group_size=row_group_size,
            overwrite=overwrite,
        )
    if fmt == "parquet":
        return ParquetSink(path, schema, metadata, row_group_size=row_group_size)
    return JsonlSink(path, schema)


def open_error_sink(path: str | os.PathLike[str]) -> JsonlSink:
    """Atomic JSONL sink for error records (``error_record.v1``; see ``records.error_record``)."""
    return JsonlSink(path, error_arrow_schema())
