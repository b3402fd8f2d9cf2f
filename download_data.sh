#!/usr/bin/env bash
# Download one Amazon Reviews 2018 category (5-core reviews + product metadata) into data/raw/<Category>/.
#
#   ./download_data.sh                 # Gift_Cards (small: 0.6 MB)
#   ./download_data.sh Pet_Supplies    # another category
#   ./download_data.sh --list          # the categories
#
# Files are downloaded to a .part name and renamed once complete and verified (sha256 where
# known, otherwise gzip integrity plus a JSON first line; the sums are recorded in SHA256SUMS
# and checked on re-runs). Re-running skips verified files. Without network it fails within
# seconds. Then: .venv/bin/python manage.py load_data --source amazon2018 --path data/raw/<Category>
# Data: Jianmo Ni, Jiacheng Li, Julian McAuley, EMNLP-IJCNLP 2019 (research use; see data/README.md).
set -euo pipefail

BASE_URL="${AMAZON2018_BASE_URL:-https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2}"
DEST_ROOT="${DATA_DIR:-$(cd "$(dirname "$0")" && pwd)/data/raw}"
CATEGORIES=(AMAZON_FASHION All_Beauty Appliances Arts_Crafts_and_Sewing Automotive Books CDs_and_Vinyl
  Cell_Phones_and_Accessories Clothing_Shoes_and_Jewelry Digital_Music Electronics Gift_Cards
  Grocery_and_Gourmet_Food Home_and_Kitchen Industrial_and_Scientific Kindle_Store Luxury_Beauty
  Magazine_Subscriptions Movies_and_TV Musical_Instruments Office_Products Patio_Lawn_and_Garden
  Pet_Supplies Prime_Pantry Software Sports_and_Outdoors Tools_and_Home_Improvement Toys_and_Games
  Video_Games)
# Checksums known in advance (published copies of these exact files).
declare -A KNOWN_SHA256=(
  [Gift_Cards_5.json.gz]=41e1f0e50d3c1c9d7d949fb6315944c8bde51ea6b7429a29fdd0d02cbc07ef25
  [meta_Gift_Cards.json.gz]=07fd154b7275ab9b1537e3802913508c7a5f84ed00f73201cd3fa18b2b51b342
)

die() { echo "download_data.sh: $*" >&2; exit 1; }

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${CATEGORIES[@]}"
  exit 0
fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
CATEGORY="${1:-Gift_Cards}"
found=0
for c in "${CATEGORIES[@]}"; do [[ "$c" == "$CATEGORY" ]] && found=1; done
[[ $found == 1 ]] || die "unknown category '$CATEGORY'; see ./download_data.sh --list"
command -v curl >/dev/null || die "curl is required"

DEST="$DEST_ROOT/$CATEGORY"
mkdir -p "$DEST"
SUMS="$DEST/SHA256SUMS"

verify() {  # verify FILE: 0 when the file is complete and matches its checksum
  local file="$1" name expected actual
  name="$(basename "$file")"
  [[ -s "$file" ]] || return 1
  actual="$(sha256sum "$file" | cut -d' ' -f1)"
  expected="${KNOWN_SHA256[$name]:-}"
  if [[ -z "$expected" && -f "$SUMS" ]]; then
    expected="$(awk -v n="$name" '$2 == n {print $1}' "$SUMS")"
  fi
  if [[ -n "$expected" ]]; then
    [[ "$actual" == "$expected" ]]
    return
  fi
  gzip -t "$file" 2>/dev/null || return 1
  zcat "$file" | head -n 1 | python3 -c "import json, sys; json.loads(sys.stdin.readline())" 2>/dev/null || return 1
  echo "$actual  $name" >> "$SUMS"
}

fetch() {  # fetch REMOTE_PATH FILE_NAME
  local url="$BASE_URL/$1" target="$DEST/$2"
  if verify "$target"; then
    echo "ok       $2 (already downloaded and verified)"
    return
  fi
  echo "download $url"
  if ! curl --fail --location --silent --show-error --connect-timeout 10 --retry 2 --retry-connrefused \
      --retry-max-time 20 --output "$target.part" "$url"; then
    rm -f "$target.part"
    rmdir "$DEST" 2>/dev/null || true
    die "could not download $url (no network, or the file moved). Nothing was changed in $DEST."
  fi
  mv "$target.part" "$target"
  if ! verify "$target"; then
    rm -f "$target"
    die "$2 failed verification (corrupt or unexpected content); removed. Run again."
  fi
  echo "ok       $2 ($(du -h "$target" | cut -f1))"
}

fetch "categoryFilesSmall/${CATEGORY}_5.json.gz" "${CATEGORY}_5.json.gz"
fetch "metaFiles2/meta_${CATEGORY}.json.gz" "meta_${CATEGORY}.json.gz"
echo "Done. Import with: .venv/bin/python manage.py load_data --source amazon2018 --path $DEST"
