"""Ablation of the default network's features, scored on the validation part.

Each variant is trained with ``nerbatch.train.train`` under the fixed protocol
(training part only; validation carved from it) for the same epoch budget, and
compared on validation entity F1, never on the test split, so the choice of
the shipped model does not peek at the test sentences. Also prints each
model's prediction throughput on the validation sentences.

    python benchmarks/ablation.py --data ../shared/data/ner_dataset.csv.zip --epochs 5 \
        --vectors "$(scripts/fetch_vectors.sh)" --out /tmp/ablation-table.md

(``--out`` is overwritten with the table alone; docs/ablation.md quotes such tables.) Every
variant is the current ``--arch default`` settings with one change. The trained bundles are
deleted at the end unless ``--keep`` names a folder for them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from nerbatch.bundle import load_bundle
from nerbatch.corpus import read_corpus
from nerbatch.errors import NerbatchError
from nerbatch.evaluate import score_corpus
from nerbatch.train import TrainSettings, protocol_parts, train

VARIANTS = {
    "seed (tutorial BiLSTM, argmax)": dict(arch="seed"),
    "words only (lowercased), Viterbi": dict(arch="default", shape_overrides=(("use_chars", False), ("use_casing", False))),
    "+ casing": dict(arch="default", shape_overrides=(("use_chars", False),)),
    "+ characters (CNN)": dict(arch="default", shape_overrides=(("use_casing", False),)),
    "+ casing + characters (default)": dict(arch="default"),
    "default, cased word vocabulary": dict(arch="default", lowercase=False),
    "default, 2 BiLSTM layers": dict(arch="default", shape_overrides=(("lstm_layers", 2),)),
    "default, BiLSTM 200": dict(arch="default", shape_overrides=(("lstm_units", 200),)),
    "default, no rare-type oversampling": dict(arch="default", rare_copies=1),
    "default, per-token softmax objective": dict(arch="default", objective="softmax"),
    "default, dropout 0.33": dict(arch="default", shape_overrides=(("dropout", 0.33),)),
    "default, no learning-rate cut on plateaus": dict(arch="default", plateau_lr_factor=1.0),
    # needs --vectors (scripts/fetch_vectors.sh)
    "default + pretrained word vectors": dict(arch="default", vectors=True),
    "default + vectors, character CNN 64 filters over 25-dim characters": dict(
        arch="default", vectors=True, shape_overrides=(("char_filters", 64), ("char_dim", 25))),
    "default + vectors, learning rate 0.002": dict(arch="default", vectors=True, learning_rate=0.002),
    "default + vectors, 2 BiLSTM layers of 200 units": dict(
        arch="default", vectors=True, shape_overrides=(("lstm_units", 200), ("lstm_layers", 2))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ner_dataset.csv.zip")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="substring(s) of variant names to run")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument("--keep", type=Path, help="keep the trained bundles under this folder")
    parser.add_argument("--vectors", type=Path, help="word vectors for the variants that use them")
    args = parser.parse_args()

    _, validation, _ = protocol_parts(read_corpus(args.data), TrainSettings())

    selected = {name: dict(params) for name, params in VARIANTS.items()
                if not args.only or any(s in name for s in args.only)}
    needing_vectors = [name for name, params in selected.items() if params.get("vectors")]
    if needing_vectors and args.vectors is None:
        parser.error(f"{needing_vectors} need --vectors (scripts/fetch_vectors.sh prints the path); "
                     "or leave them out with --only")

    rows = []
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="nerbatch-ablation-"))
    try:
        _train_variants(args, selected, validation, scratch, rows)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    _write_table(args, rows)


def _train_variants(args, selected: dict, validation, scratch: Path, rows: list) -> None:
    for name, params in selected.items():
        uses_vectors = params.pop("vectors", False)
        # no refit: the bundle is scored on validation, so it must not have trained on it
        settings = TrainSettings.for_arch(params.pop("arch"), epochs=args.epochs, patience=args.epochs,
                                          seed=args.seed, refit=False, **params)
        out = scratch / name.split(" (")[0].replace(" ", "_").replace(",", "").replace("+", "plus")
        metrics = train(args.data, out, settings, verbose=0, vectors_path=args.vectors if uses_vectors else None)
        tagger = load_bundle(out).tagger()
        score_corpus(tagger, validation.subset(range(min(512, len(validation)))))  # trace the graphs first
        scored = score_corpus(tagger, validation)
        epoch_seconds = metrics["training"]["seconds_per_epoch"]  # the epochs alone: not reading, scoring, saving
        row = {
            "variant": name,
            # the network's own best epoch, decoded with the transitions it trained with (none for the
            # softmax objective: the tag-bigram prior is fitted after training)
            "val_f1": metrics["validation"]["members"][0]["best_entity_f1"],
            "val_f1_shipped": metrics["validation"]["entity_f1"],
            "best_epoch": metrics["validation"]["members"][0]["best_epoch"],
            "val_f1_per": scored["per_type"]["per"]["f1"],
            "val_f1_org": scored["per_type"]["org"]["f1"],
            "val_macro_f1": scored["macro_f1"],
            "tokens_per_s": scored["tokens_per_s"],
            "train_s_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)


def _write_table(args, rows: list) -> None:
    lines = [
        f"Validation entity F1 (micro), {args.epochs} epochs, best epoch kept, seed {args.seed}; "
        "validation = 10% of the protocol's training part.",
        "",
        "| variant | val F1 | val F1 as shipped | best epoch | per F1 | org F1 | macro F1 | model tokens/s "
        "| train s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['val_f1']:.4f} | {r['val_f1_shipped']:.4f} | {r['best_epoch']} | {r['val_f1_per']:.4f} | "
            f"{r['val_f1_org']:.4f} | {r['val_macro_f1']:.4f} | {r['tokens_per_s']:,.0f} | {r['train_s_per_epoch']:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    try:
        main()
    except NerbatchError as exc:  # a missing corpus or bundle: one line, as from the CLI
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
