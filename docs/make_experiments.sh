#!/usr/bin/env bash
# Regenerates every figure of docs/experiments.md with exactly the commands it shows.
# Run from the repository root after `make install`. Each command skips the runs that are
# already done, so an interrupted script continues where it stopped.
set -euo pipefail
. .venv/bin/activate
E=docs/experiments
C=examples/tubingen.jpg
S=examples/starry_night.jpg

impasto sweep $C $S -o $E/init --vary init=content,style,gaussian,uniform --size 192 --steps 200 --seed 1
impasto sweep $C $S -o $E/weights --vary style_weight=1,10,100,1000 --size 192 --steps 200 --seed 1
impasto sweep $C $S -o $E/optimizer --vary optimizer:lr=lbfgs:1,adam:0.01,adam:0.03,adam:0.1 --size 192 --steps 200 --seed 1
impasto explore $C $S -o $E/layers --size 192 --steps 200 --seed 1
impasto sweep $C $S -o $E/content_layer --vary content_layers=relu2_2,relu3_2,relu4_2,relu5_2 --size 192 --steps 200 --seed 1
impasto sweep $C $S -o $E/pooling --vary pooling=max,avg --size 192 --steps 200 --seed 1
impasto sweep --task texture $S -o $E/texture_optimizer --vary style_layers=relu1_1,relu1_1+relu2_1 --vary optimizer:lr=lbfgs:1,adam:0.03 --size 192 --steps 200 --seed 1
impasto sweep $C $S -o $E/style_layers --vary style_layers=relu1_1,relu1_1+relu2_1,relu1_1+relu2_1+relu3_1,relu1_1+relu2_1+relu3_1+relu4_1,relu1_1+relu2_1+relu3_1+relu4_1+relu5_1 --size 192 --steps 200 --seed 1
