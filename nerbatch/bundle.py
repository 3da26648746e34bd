"""The model bundle: one directory that every job loads.

Layout::

    model.keras     Keras 3 native model (stock layers only; loads with safe_mode=True)
    vocab.json      word and character vocabularies (ids 0/1 = padding/unknown)
    tags.json       IOB2 tag list, index = model output id
    config.json     name, version, arch, max_len, features, decoder, network shape
    transitions.json  tag transition scores added in Viterbi decoding: learned by the CRF
                    objective, or a weighted tag-bigram prior (optional)
    truecase.json   each word's usual written form in the training part, the pairs of words it
                    writes capitalised together, and the words and pairs it writes capitalised
                    nearly always: for sentences in capitals or Title Case and documents in lower
                    case (optional: without it they are read as written)
    metrics.json    protocol test-split scores, training settings, data sha256, library versions
    history.json    per-epoch training curves (optional)
    training.png    plot of the curves (optional)
    manifest.json   format version and the sha256 of every other file

Loading checks the manifest first and refuses a tampered, truncated or
newer-format bundle with a one-line reason.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

from nerbatch.errors import BundleError
from nerbatch.records import ENTITY_LABELS, MODEL_ID_PART
from nerbatch.truecase import Truecaser
from nerbatch.vocab import PAD_TOKEN, UNK_TOKEN, FeatureEncoder, Vocabulary

FORMAT = "nerbatch-bundle"
FORMAT_VERSION = 1
REQUIRED_FILES = ("model.keras", "vocab.json", "tags.json", "config.json")
MANIFEST = "manifest.json"
TRUECASE = "truecase.json"
# what reading a JSON file may raise: RecursionError for one nested thousands of levels deep
_UNREADABLE_JSON = (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError)
_STAGING_MARK = ".nerbatch-staging"  # in a folder a bundle is being written to, until it is in place


def default_model_path() -> Path:
    """The bundle shipped inside the package."""
    return Path(str(resources.files("nerbatch") / "models" / "default"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def write_manifest(directory: Path) -> dict:
    files = {
        p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in (MANIFEST, _STAGING_MARK)
    }
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "files": files}
    write_json(directory / MANIFEST, manifest)
    return manifest


def verify_bundle(directory: str | Path) -> dict:
    """Check the manifest and every file's checksum; return the manifest."""
    directory = Path(directory)
    if not directory.is_dir():
        left = sorted(directory.parent.glob(f".{glob.escape(directory.name)}.old-*"))
        if left and not directory.exists():
            raise BundleError(f"{directory}: model bundle not found; a training killed while replacing it left "
                              f"the previous bundle in {left[-1]} (the next training into it puts it back)")
        if directory.is_file():
            raise BundleError(f"{directory}: a file; a model bundle is the folder that holds {MANIFEST}, "
                              f"model.keras and the rest (here {directory.parent} if it is one)")
        raise BundleError(f"{directory}: model bundle not found (expected a directory)")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{directory}: not a nerbatch model bundle (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except _UNREADABLE_JSON as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: not a nerbatch bundle manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(f"{manifest_path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{directory}: bundle format {version} is newer than this nerbatch reads ({FORMAT_VERSION}); upgrade nerbatch"
        )
    files = manifest.get("files") or {}
    if not isinstance(files, dict) or not all(isinstance(entry, dict) for entry in files.values()):
        raise BundleError(f"{manifest_path}: malformed file list")
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"{directory}: manifest does not list required file {name}")
    for name, entry in files.items():
        path = directory / name
        if Path(name).name != name or not path.is_file():
            raise BundleError(f"{directory}: bundle file {name} is missing")
        if path.stat().st_size != entry.get("bytes"):
            raise BundleError(f"{directory}: bundle file {name} is truncated or altered (size mismatch)")
        try:
            digest = _sha256(path)
        except OSError as exc:
            raise BundleError(f"{directory}: bundle file {name} is unreadable ({exc.strerror or exc})") from None
        if digest != entry.get("sha256"):
            raise BundleError(f"{directory}: bundle file {name} fails its checksum (tampered or corrupt)")
    return manifest


@dataclass
class Bundle:
    """A verified, loaded model bundle."""

    path: Path
    config: dict
    model: Any
    encoder: FeatureEncoder
    tags: list[str]
    metrics: dict = field(default_factory=dict)
    transition_scores: Any = None  # [prev, next] scores added in Viterbi decoding, or None
    truecaser: Truecaser | None = None

    @property
    def name(self) -> str:
        return f"{self.config['name']}@{self.config['version']}"

    @property
    def max_len(self) -> int:
        return int(self.config["max_len"])

    def tagger(self, batch_size: int = 256):
        from nerbatch.predictor import Tagger

        return Tagger(
            self.model,
            self.encoder,
            self.tags,
            max_len=self.max_len,
            decoder=self.config["decoder"],
            batch_size=batch_size,
            transition_scores=self.transition_scores,
            truecaser=self.truecaser,
        )


def read_bundle_json(directory: Path, name: str) -> Any:
    try:
        return json.loads((directory / name).read_text(encoding="utf-8"))
    except _UNREADABLE_JSON as exc:
        raise BundleError(f"{directory / name}: unreadable ({exc})") from None


# What loading reads from config.json, and the JSON type each must have.
CONFIG_FIELDS = {"name": str, "version": str, "arch": str, "max_len": int, "lowercase": bool,
                 "max_word_len": int, "features": list, "decoder": str}
_TAG = re.compile(r"O|[BI]-[A-Za-z]+")
INPUT_FEATURES = ("words", "chars", "casing")  # the inputs a network may read (ModelShape.input_names)


def _malformed(directory: Path, name: str, why: str) -> BundleError:
    return BundleError(f"{directory / name}: malformed bundle file: {why}")


def read_bundle_config(directory: str | Path) -> dict:
    """config.json, checked to hold what loading and ``nerbatch info`` read (``BundleError`` if not)."""
    directory = Path(directory)
    config = read_bundle_json(directory, "config.json")
    if not isinstance(config, dict):
        raise _malformed(directory, "config.json", "not a JSON object")
    version = config.get("format_version", FORMAT_VERSION)
    if type(version) is not int:
        raise _malformed(directory, "config.json", f"format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise BundleError(f"{directory}: config format is newer than this nerbatch reads")
    for key, kind in CONFIG_FIELDS.items():
        if not isinstance(config.get(key), kind) or (kind is int and isinstance(config[key], bool)):
            raise _malformed(directory, "config.json", f"{key!r} is missing or not a {kind.__name__}")
    features = config["features"]
    if not features or not all(f in INPUT_FEATURES for f in features) or len(set(features)) != len(features):
        raise _malformed(directory, "config.json", f"features {features!r} are not distinct names among "
                                                   f"{', '.join(INPUT_FEATURES)}")
    if config["decoder"] not in ("argmax", "viterbi"):
        raise _malformed(directory, "config.json", f"unknown decoder {config['decoder']!r}")
    for key, least in (("max_len", 2), ("max_word_len", 1)):
        if config[key] < least:
            raise _malformed(directory, "config.json", f"{key!r} must be at least {least}, got {config[key]}")
    for key in ("name", "version"):  # records carry name@version (schemas/entity_record.v1.json)
        if not MODEL_ID_PART.fullmatch(config[key]):
            raise BundleError(f"{directory / 'config.json'}: model {key} {config[key]!r} holds '@' or white space, "
                              "which entity records cannot carry; retrain with a --name without them")
    return config


def _read_vocab(directory: Path, config: dict) -> dict:
    vocab = read_bundle_json(directory, "vocab.json")
    for key in ("words", "chars"):
        items = vocab.get(key) if isinstance(vocab, dict) else None
        if key == "chars" and items is None and "chars" not in config["features"]:
            continue
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items) or items[:2] != [PAD_TOKEN, UNK_TOKEN]:
            raise _malformed(directory, "vocab.json", f"{key!r} is not a list of strings starting with the "
                                                      "padding and unknown tokens")
        if len(set(items)) != len(items):  # an id per item: a repeat shifts every later one
            raise _malformed(directory, "vocab.json", f"{key!r} lists an item twice")
    return vocab


def _read_tags(directory: Path) -> list[str]:
    tags = read_bundle_json(directory, "tags.json")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and _TAG.fullmatch(t) for t in tags):
        raise _malformed(directory, "tags.json", "not a list of IOB2 tags")
    foreign = sorted({t[2:] for t in tags if t != "O"} - set(ENTITY_LABELS))
    if foreign:  # a bundle trained before nerbatch refused such corpora
        raise BundleError(f"{directory / 'tags.json'}: entity type(s) {', '.join(foreign)} are not labels of the "
                          f"entity records ({', '.join(ENTITY_LABELS)}); retrain on a corpus tagged with them")
    return tags


def _read_transition_scores(directory: Path, n_tags: int):
    import numpy as np

    transitions = read_bundle_json(directory, "transitions.json")
    try:
        if "scores" in transitions:
            scores = np.asarray(transitions["scores"], dtype=np.float64)
        else:  # written by nerbatch 0.1.0: a weighted bigram prior
            scores = float(transitions["weight"]) * np.asarray(transitions["log_probs"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(directory, "transitions.json", f"no scores ({type(exc).__name__}: {exc})") from None
    if scores.shape != (n_tags, n_tags):
        raise BundleError(f"{directory / 'transitions.json'}: shape does not match tags.json")
    return scores


def _read_truecaser(directory: Path) -> Truecaser:
    try:
        return Truecaser.from_json(read_bundle_json(directory, TRUECASE))
    except ValueError as exc:
        raise _malformed(directory, TRUECASE, str(exc)) from None


def _release(version: str) -> tuple[int, ...]:
    """(3, 15, 1) from '3.15.1' or '3.15.1.dev0'; () when it does not start with a number."""
    numbers = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(n) for n in numbers.group().split(".")) if numbers else ()


def _unloadable(path: Path, exc: Exception, metrics: dict, keras_version: str) -> str:
    """One line on why Keras could not load the model: an older Keras than saved it, most often."""
    versions = metrics.get("versions") if isinstance(metrics, dict) else None
    saved_with = str(versions.get("keras", "")) if isinstance(versions, dict) else ""
    if _release(keras_version) < _release(saved_with):
        return (f"{path}: cannot load model saved with Keras {saved_with} under Keras {keras_version}; "
                f"upgrade it: pip install 'keras>={saved_with}'")
    # Keras's message spans lines: what failed, the whole config, then the cause; keep the first and the cause.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = lines[:1] + [line for line in lines[1:] if line.startswith("Exception encountered")][-1:]
    return f"{path}: cannot load model ({type(exc).__name__}: {' '.join(kept)})"


def load_bundle(directory: str | Path | None = None) -> Bundle:
    """Verify and load a bundle; ``None`` means the shipped default model.

    A training that replaces the bundle while it loads (a rename of the whole folder) is seen, and the
    new one loaded: its files are never mixed with the previous one's."""
    if directory is not None and not os.fspath(directory):
        raise BundleError("model bundle path is empty; give a folder, or None for the shipped model")
    directory = Path(directory) if directory is not None else default_model_path()
    for _ in range(3):
        folder = _folder_identity(directory)
        try:
            bundle = _load_bundle_files(directory)
        except BundleError:
            if _folder_identity(directory) == folder:
                raise
            continue  # a file gone or changed under the load: the replacement is read whole
        if _folder_identity(directory) == folder:
            return bundle
    raise BundleError(f"{directory}: replaced three times while it was being loaded; load it again")


def _folder_identity(directory: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _load_bundle_files(directory: Path) -> Bundle:
    from nerbatch.backend import keras

    listed = verify_bundle(directory)["files"]  # only files the checksums vouch for are read
    config = read_bundle_config(directory)
    vocab = _read_vocab(directory, config)
    tags = _read_tags(directory)
    metrics = read_bundle_json(directory, "metrics.json") if "metrics.json" in listed else {}
    saving = keras().saving  # outside the try: a missing backend is not the model's fault
    if not zipfile.is_zipfile(directory / "model.keras"):  # Keras would say "File not found" of it
        raise BundleError(f"{directory / 'model.keras'}: cannot load model (not a Keras archive: not a zip file)")
    try:
        model = saving.load_model(directory / "model.keras", compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise BundleError(_unloadable(directory / "model.keras", exc, metrics, keras().__version__)) from None
    _check_model_matches_files(directory, model, config, vocab, tags)
    transition_scores = _read_transition_scores(directory, len(tags)) if "transitions.json" in listed else None
    # only a network that reads characters is given them, whatever vocab.json holds
    chars = Vocabulary(vocab["chars"]) if "chars" in config["features"] else None
    encoder = FeatureEncoder(
        Vocabulary(vocab["words"]), chars, lowercase=config["lowercase"],
        max_word_len=config["max_word_len"], casing="casing" in config["features"],
    )
    truecaser = _read_truecaser(directory) if TRUECASE in listed else None
    return Bundle(directory, config, model, encoder, list(tags), metrics, transition_scores, truecaser)


def _check_model_matches_files(directory: Path, model, config: dict, vocab: dict, tags: list[str]) -> None:
    """``BundleError`` unless the network reads the features, ids and tags its JSON files describe."""
    where = directory / "model.keras"
    if tuple(model.output_shape)[-1] != len(tags):
        raise BundleError(f"{where}: scores {model.output_shape[-1]} tags, tags.json lists {len(tags)}")
    inputs = {t.name: tuple(t.shape) for t in model.inputs}
    if sorted(inputs) != sorted(config["features"]):
        raise BundleError(f"{where}: reads {', '.join(sorted(inputs))}, config.json lists features "
                          f"{', '.join(sorted(map(str, config['features'])))}")
    if "chars" in inputs and inputs["chars"][-1] != config["max_word_len"]:
        raise BundleError(f"{where}: reads {inputs['chars'][-1]} characters a word, "
                          f"config.json says max_word_len {config['max_word_len']}")
    for layer in model.layers:
        for key, suffix in (("words", "word_embedding"), ("chars", "char_embedding")):
            if layer.name.endswith(suffix) and layer.input_dim < len(vocab.get(key) or ()):
                raise BundleError(f"{where}: {layer.name} has {layer.input_dim} rows, vocab.json lists "
                                  f"{len(vocab[key])} {key}")


def _listed_files(directory: Path) -> set[str] | None:
    """Names a folder's nerbatch manifest lists, or None when it has no such manifest."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except _UNREADABLE_JSON:
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        return None
    return set(manifest["files"])


def check_bundle_target(directory: str | Path) -> Path:
    """The absolute folder a bundle may be written to; ``BundleError`` (one line) when it may not.

    Writing replaces the folder whole, so it must be missing, empty, or a bundle holding
    nothing its manifest does not list: never a folder holding other files (the corpus, say).
    """
    directory = Path(directory).resolve()
    try:
        return _check_bundle_target(directory)
    except OSError as exc:  # a name too long, a folder that cannot be listed
        raise BundleError(f"{directory}: cannot be written ({exc.strerror or exc})") from None


# the longest name written beside a bundle is ".<name>.old-<pid>", and Linux pids have up to 7 digits
_MAX_NAME_BYTES = 255 - len("..old-") - 7


def _check_bundle_target(directory: Path) -> Path:
    if len(os.fsencode(directory.name)) > _MAX_NAME_BYTES:
        raise BundleError(f"{directory}: the folder name is longer than {_MAX_NAME_BYTES} bytes, too long for the "
                          "names written beside it while it is replaced; choose a shorter --out")
    for parent in directory.parents:
        if _listed_files(parent) is not None:  # the bundle's checks would then fail on the new folder
            raise BundleError(f"{directory}: is inside the model bundle {parent}; choose a folder outside it")
    if directory.exists():
        if not directory.is_dir():
            raise BundleError(f"{directory}: exists and is not a folder; choose another --out")
        if os.path.ismount(directory):  # a volume: the folder itself cannot be renamed into place
            raise BundleError(f"{directory}: is a mount point; write the bundle to a folder inside it")
        present = {p.name for p in directory.iterdir()}
        if present:
            listed = _listed_files(directory)
            foreign = sorted(present - {MANIFEST, _STAGING_MARK} - (listed or set()))
            if listed is None or foreign:
                example = f" (such as {foreign[0]})" if listed is not None else ""
                raise BundleError(f"{directory}: folder holds files that are not part of a nerbatch bundle{example}; "
                                  "choose a new or empty folder")
    ancestor = directory.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise BundleError(f"{directory}: cannot be created ({ancestor} is not a writable folder)")
    return directory


def save_bundle(
    directory: str | Path,
    *,
    model,
    encoder: FeatureEncoder,
    tags: list[str],
    config: dict,
    metrics: dict | None = None,
    history: dict | None = None,
    transitions: dict | None = None,
    truecaser: Truecaser | None = None,
    extra_files: dict[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write a complete bundle atomically: a temp sibling renamed into place.

    ``extra_files`` maps a file name to a function that writes that file at the path it is given.
    A write that fails (a full disk) is a ``BundleError``; the previous bundle stays.
    """
    import shutil
    import tempfile

    directory = check_bundle_target(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    backup = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    placed = False  # the new bundle is in place: the save has succeeded, whatever fails after
    try:
        # tells a later recovery that this folder, by this name, is a staging folder of nerbatch's
        (staging / _STAGING_MARK).write_text(staging.name, encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        model.save(staging / "model.keras")
        write_json(
            staging / "vocab.json",
            {"words": encoder.words.items, "chars": encoder.chars.items if encoder.chars else None},
        )
        write_json(staging / "tags.json", list(tags))
        write_json(staging / "config.json", {"format_version": FORMAT_VERSION, **config})
        if metrics is not None:
            write_json(staging / "metrics.json", metrics)
        if history is not None:
            write_json(staging / "history.json", history)
        if transitions is not None:
            write_json(staging / "transitions.json", transitions)
        if truecaser is not None:
            write_json(staging / TRUECASE, truecaser.to_json())
        for name, write in (extra_files or {}).items():
            write(staging / name)
        write_manifest(staging)
        if directory.exists():
            os.replace(directory, backup)
            os.replace(staging, directory)
            placed = True
            shutil.rmtree(backup)
        else:
            os.replace(staging, directory)
            placed = True
    except OSError as exc:
        if not placed:
            _undo_save(directory, staging, backup)
            raise BundleError(f"{directory}: cannot write the bundle ({exc.strerror or exc}); "
                              "the previous one, if any, is unchanged") from None
        # in place: the previous bundle left beside it goes at the next recovery
    except BaseException as exc:
        if not placed:
            _undo_save(directory, staging, backup)
        else:  # a stop while the previous bundle was being removed: the new one is written all the same
            shutil.rmtree(backup, ignore_errors=True)
            exc.bundle_written = directory
        raise
    with contextlib.suppress(OSError):  # a mark left behind is cleared by the next recovery
        (directory / _STAGING_MARK).unlink()
    return directory


def _undo_save(directory: Path, staging: Path, backup: Path) -> None:
    """Clear what a save that failed before its bundle was in place left; the previous bundle stays."""
    import shutil

    if backup.exists():
        if directory.exists():
            shutil.rmtree(backup, ignore_errors=True)
        else:  # interrupted between the two renames: the previous bundle goes back
            os.replace(backup, directory)
    shutil.rmtree(staging, ignore_errors=True)


def recover_interrupted_save(directory: str | Path) -> list[str]:
    """Undo what a killed ``save_bundle`` left beside ``directory`` (call it holding the lock).

    A kill between its two renames leaves the previous bundle in ``.<name>.old-<pid>`` and no
    ``<name>``: it is put back. Staging folders (``.<name>.`` and eight characters) of killed
    writers are removed, and the staging mark a kill right after the rename left in the bundle.
    A staging folder is known by its mark (or by being empty), a previous bundle by its manifest
    (or by being empty: an empty folder was replaced), never by its name alone: a user's folder
    whose name happens to fit is left alone. Returns what was done, one line each.
    """
    import shutil

    directory = Path(directory).resolve()
    done = []
    if not directory.parent.is_dir():
        return done
    staging = re.compile(rf"\.{re.escape(directory.name)}\.[a-z0-9_]{{8}}")
    siblings = sorted(directory.parent.iterdir())
    for sibling in siblings:
        old = re.fullmatch(rf"\.{re.escape(directory.name)}\.old-(\d+)", sibling.name)
        # not asked whether its pid is alive: the lock held says no writer is, and in a container every run
        # has the same pid (1, or 7 under an init), so a killed run's pid is the next run's own
        if (old and sibling.is_dir()
                and (_listed_files(sibling) is not None or not any(sibling.iterdir()))):
            if directory.exists():
                shutil.rmtree(sibling, ignore_errors=True)
                done.append(f"removed {sibling.name}, the previous bundle of a finished write")
            else:
                os.replace(sibling, directory)
                done.append(f"put back the previous bundle from {sibling.name}")
    if (directory / _STAGING_MARK).is_file() and _listed_files(directory) is not None:
        (directory / _STAGING_MARK).unlink()
        done.append(f"removed the staging mark a killed write left in {directory.name}")
    for sibling in siblings:
        if staging.fullmatch(sibling.name) and sibling.is_dir() and (
                _marked_as(sibling) or not any(sibling.iterdir())):  # empty: killed before its mark
            shutil.rmtree(sibling, ignore_errors=True)
            done.append(f"removed {sibling.name}, the staging folder of a killed write")
    return done


def _marked_as(folder: Path) -> bool:
    """Whether ``folder`` is a staging folder by its own name; a copy of one, or of a bundle that kept
    its mark, under another name is a user's folder."""
    try:
        return (folder / _STAGING_MARK).read_text(encoding="utf-8") == folder.name
    except (OSError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def lock_bundle_target(directory: str | Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside the bundle folder, so that a second training into the same
    folder stops at once instead of replacing the first one's bundle; removed when released."""
    import fcntl

    directory = Path(directory).resolve()
    path = directory.with_name(f".{directory.name}.lock")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path, "a")  # noqa: SIM115 - closed below
    except OSError as exc:  # a read-only volume, where os.access told root it could write
        raise BundleError(f"{directory}: cannot be created ({exc.strerror or exc} at {exc.filename or path})") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BundleError(f"{directory}: another nerbatch train is writing this bundle; "
                              "wait for it to finish") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
