#!/usr/bin/env bash
# Regenerates the README's perceptual-control gallery with exactly the commands it shows.
# Run from the repository root after `make install` (about 15 minutes on a 2-core CPU).
set -euo pipefail
. .venv/bin/activate
img=docs/img
c=examples/tubingen.jpg; s=examples/starry_night.jpg; scream=examples/the_scream.jpg

# colour: plain, luminance-only, style recoloured to the photo, photo recoloured to the style
impasto transfer $c $s -o $img/color_none.png --size 384 --seed 1
impasto transfer $c $s -o $img/color_luminance.png --size 384 --seed 1 --preserve-color luminance
impasto transfer $c $s -o $img/color_histogram.png --size 384 --seed 1 --preserve-color histogram
impasto transfer $c $s -o $img/color_from_style.png --size 384 --seed 1 --color-from style

# two styles blended, from all Starry Night to all Scream
for blend in 1,0 0.75,0.25 0.5,0.5 0.25,0.75 0,1; do
  impasto transfer $c $s $scream --style-blend $blend -o $img/blend_${blend/,/_}.png --size 256 --seed 1
done

# style scale: smaller and larger brush strokes (scale 1 is color_none.png)
impasto transfer $c $s -o $img/scale_0.5.png --size 384 --seed 1 --style-scale 0.5
impasto transfer $c $s -o $img/scale_2.png --size 384 --seed 1 --style-scale 2

# regions: a mask drawn from the photo (sky red, the rest blue), one style per region
python scripts/make_mask.py $c examples/tubingen_mask.png
impasto transfer $c -o $img/regions.png --size 384 --seed 1 --mask examples/tubingen_mask.png \
  --region-style red=$s --region-style blue=$scream
impasto transfer $c -o $img/regions_sky_only.png --size 384 --seed 1 --mask examples/tubingen_mask.png \
  --region-style red=$s --region-style blue=none

# style statistic: mean and covariance (W2) against the default Gram (color_none.png)
impasto transfer $c $s -o $img/style_loss_w2.png --size 384 --seed 1 --style-loss w2

# a large output: 2048 px, coarse to fine (about 11 minutes on a 2-core CPU)
impasto transfer $c $s -o $img/tubingen_starry_2048.png --size 2048 --steps 300 --seed 1
