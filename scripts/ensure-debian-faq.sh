#!/usr/bin/env bash
# Make sure the Debian FAQ (package debian-faq) is installed: it is the real
# corpus behind mmsearch.indexer.datasets.debian_faq(). Idempotent; called by
# the Makefile before tests. Exits non-zero with a clear message if it cannot.
set -euo pipefail

PKG=debian-faq
# The package installs its HTML here (/usr/share/doc/debian-faq only holds
# the changelog); a slim image's dpkg path-excludes could drop it silently.
MARKER=/usr/share/doc/debian/FAQ/index.en.html

[ -f "$MARKER" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "ensure-debian-faq: $MARKER is missing and this user cannot install packages." >&2
    echo "  run as root: apt-get install -y $PKG" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-debian-faq: no apt-get here; install the Debian package '$PKG' by other means." >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when needed: none cached, or the cached ones
# are stale (install fails on a vanished .deb).
if ! apt-cache show "$PKG" >/dev/null 2>&1 || ! "${SUDO[@]}" apt-get install -y -qq "$PKG" >/dev/null; then
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq "$PKG" >/dev/null
fi

if [ ! -f "$MARKER" ]; then
    echo "ensure-debian-faq: $PKG installed but $MARKER is missing" >&2
    echo "  (check path-exclude rules in /etc/dpkg/dpkg.cfg.d/)" >&2
    exit 1
fi
echo "ensure-debian-faq: $PKG installed"
