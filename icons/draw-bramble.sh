#!/usr/bin/env bash
# Draws the master icon icons/bramble.png (1024x1024 RGBA): a blackberry on a
# dark-purple rounded square. Needs ImageMagick. After changing it, regenerate
# the desktop set with:
#   npx tauri icon icons/bramble.png -o src-tauri/icons && rm -rf src-tauri/icons/android src-tauri/icons/ios
set -euo pipefail
cd "$(dirname "$0")"

radius=44 step=86 row_height=74
drupelets="" highlights="" y=400
for count in 4 5 4 5 4 3 2; do
  x=$((512 - (count - 1) * step / 2))
  for _ in $(seq 1 "$count"); do
    drupelets+=" circle $x,$y $((x + radius)),$y"
    highlights+=" circle $((x - 14)),$((y - 16)) $((x - 3)),$((y - 16))"
    x=$((x + step))
  done
  y=$((y + row_height))
done

convert -size 1024x1024 xc:none \
  -fill '#2a1433' -draw "roundrectangle 64,64 959,959 200,200" \
  -stroke '#4f8a34' -strokewidth 20 -draw "line 512,350 536,200" -stroke none \
  -fill '#8a1f5c' -stroke '#1a0a22' -strokewidth 9 -draw "$drupelets" -stroke none \
  -fill '#e07ab0' -draw "$highlights" \
  -fill '#4f8a34' -draw "path 'M 512,352 C 460,290 380,280 320,308 C 380,340 450,356 512,352 Z'" \
  -fill '#6fae48' -draw "path 'M 512,352 C 570,290 650,280 710,308 C 650,340 580,356 512,352 Z'" \
  PNG32:bramble.png
