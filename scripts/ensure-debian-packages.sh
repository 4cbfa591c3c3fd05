#!/usr/bin/env bash
# Make sure Debian packages the tests use are installed, each checked by a file it ships:
#   ensure-debian-packages.sh PACKAGE=MARKER [PACKAGE=MARKER ...]
# debian-faq is the real corpus behind mmsearch.indexer.datasets.debian_faq(); chromium is the
# browser of the UI test. Idempotent; called by `make test` and by test fixtures. Exits non-zero
# with a clear message if it cannot install what is missing.
set -euo pipefail

missing=()
for spec in "$@"; do
    [ -e "${spec#*=}" ] || missing+=("$spec")
done
[ ${#missing[@]} -eq 0 ] && exit 0
packages=("${missing[@]%%=*}")

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "ensure-debian-packages: missing ${packages[*]} and this user cannot install packages." >&2
    echo "  run as root: apt-get install -y ${packages[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-debian-packages: no apt-get here; install the Debian packages ${packages[*]} by other means." >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when needed: none cached, or the cached ones are stale
# (install fails on a vanished .deb).
if ! apt-cache show "${packages[@]}" >/dev/null 2>&1 || ! "${SUDO[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null; then
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
fi

for spec in "${missing[@]}"; do
    if [ ! -e "${spec#*=}" ]; then
        # e.g. the FAQ's HTML under /usr/share/doc, dropped by a slim image's dpkg path-excludes
        echo "ensure-debian-packages: ${spec%%=*} installed but ${spec#*=} is missing" >&2
        echo "  (check path-exclude rules in /etc/dpkg/dpkg.cfg.d/)" >&2
        exit 1
    fi
done
echo "ensure-debian-packages: installed ${packages[*]}"
