#!/usr/bin/env bash
# Writes the King James Version of the Bible as plain text to $1, from Debian's bible-kjv-text package
# (the text; public domain) printed by bible-kjv's `bible` tool (the package stores it in its own
# compressed format). Needs only `apt-get download` (no installation, no root).
#
#     bash tools/demo-model/fetch_text.sh /tmp/demo-data/kjv.txt
set -euo pipefail
out=${1:?usage: fetch_text.sh OUT.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt-get download drops to the _apt user when it can write here
cd "$work"
apt-get download bible-kjv bible-kjv-text >/dev/null
for deb in *.deb; do dpkg-deb -x "$deb" root; done
ls -1 *.deb > versions.txt
mkdir -p "$(dirname "$out")"
# Genesis 1:1 to Revelation 22:21: the whole text, chapter headings and numbered verses.
root/usr/bin/bible -p root/usr/lib "Gen1:1-Rev22:21" > "$out"
cp versions.txt "$out.packages"
echo "wrote $(wc -c < "$out") bytes to $out from: $(tr '\n' ' ' < versions.txt)"
