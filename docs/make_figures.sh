#!/usr/bin/env bash
# Regenerates every image the README shows, with exactly the commands the README shows.
# Run from the repository root after `make install` (about 15 minutes on a 2-core CPU).
set -euo pipefail
. .venv/bin/activate
img=docs/img

impasto transfer examples/tubingen.jpg examples/starry_night.jpg -o $img/tubingen_starry.png --seed 1

for layer in relu1_1 relu2_1 relu3_1 relu4_1 relu5_1; do
  impasto reconstruct examples/tubingen.jpg --layer $layer -o $img/reconstruct_$layer.png --size 256 --seed 1
done

impasto texture examples/starry_night.jpg -o $img/texture_seed1.png --size 256 --seed 1
impasto texture examples/starry_night.jpg -o $img/texture_seed1_again.png --size 256 --seed 1
impasto texture examples/starry_night.jpg -o $img/texture_seed2.png --size 256 --seed 2
cmp $img/texture_seed1.png $img/texture_seed1_again.png && echo "seed 1 twice: identical files"
cmp -s $img/texture_seed1.png $img/texture_seed2.png || echo "seed 1 and seed 2: different"
