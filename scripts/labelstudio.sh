#!/usr/bin/env bash
# Label Studio in its own virtualenv (.ls-venv), apart from the project's dependencies.
#   scripts/labelstudio.sh install            install once; reused when present
#   scripts/labelstudio.sh start PORT DATADIR USER PASSWORD TOKEN
#   scripts/labelstudio.sh serve PORT DATADIR   (user, password, token from LABEL_STUDIO_USERNAME,
#        LABEL_STUDIO_PASSWORD, LABEL_STUDIO_USER_TOKEN: secrets stay off the command line)
set -euo pipefail
cd "$(dirname "$0")/.."
LS_VENV=${LS_VENV:-.ls-venv}
LS_VERSION=${LS_VERSION:-1.23.2}
case "${1:-}" in
  install)
    if [ -x "$LS_VENV/bin/label-studio" ]; then exit 0; fi
    echo "installing label-studio $LS_VERSION into $LS_VENV (a few minutes, once)"
    python3 -m venv "$LS_VENV"
    "$LS_VENV/bin/pip" install -q --upgrade pip
    "$LS_VENV/bin/pip" install -q -c scripts/labelstudio-constraints.txt "label-studio==$LS_VERSION"
    ;;
  start)
    port=$2; data=$3; user=$4; password=$5; token=$6
    export LABEL_STUDIO_BASE_DATA_DIR="$data"
    exec "$LS_VENV/bin/label-studio" start --no-browser --internal-host 127.0.0.1 --port "$port" \
      --username "$user" --password "$password" --user-token "$token" --enable-legacy-api-token
    ;;
  serve)
    port=$2; data=$3
    : "${LABEL_STUDIO_USERNAME:?}" "${LABEL_STUDIO_PASSWORD:?}" "${LABEL_STUDIO_USER_TOKEN:?}"
    export LABEL_STUDIO_BASE_DATA_DIR="$data"
    exec "$LS_VENV/bin/label-studio" start --no-browser --internal-host 127.0.0.1 --port "$port" \
      --enable-legacy-api-token
    ;;
  *) echo "usage: $0 install | start PORT DATADIR USER PASSWORD TOKEN | serve PORT DATADIR" >&2; exit 2 ;;
esac
