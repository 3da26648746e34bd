"""Datasets left as a kill leaves them, for the tests of what happens next."""

import os

import pytest

from nerbatch.records import entity_arrow_schema
from nerbatch.sinks import DatasetSink


def publish_killed_at_the_second_part(folder, old_rows: list[dict], new_rows: list[dict], monkeypatch) -> None:
    """Write ``old_rows`` as a dataset of one row per part, then overwrite it with ``new_rows`` in a
    sink killed between the renames of its first and second parts: old and new parts side by side."""
    schema = entity_arrow_schema()
    with DatasetSink(folder, schema, part_rows=1) as ds:
        ds.write_records(old_rows)
    replace, renamed = os.replace, []

    def killed_at_the_second_part(src, dst):
        if os.path.basename(dst).startswith("part-"):
            renamed.append(dst)
            if len(renamed) == 2:
                raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        with DatasetSink(folder, schema, part_rows=1, overwrite=True) as ds:
            ds.write_records(new_rows)
    monkeypatch.undo()
