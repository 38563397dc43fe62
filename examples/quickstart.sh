#!/usr/bin/env bash
# The quickstart: export ResNet-20 from the zoo (shaped for the built-in sklearn digits data,
# 1x8x8 images, 10 classes), compile it into a 4-block DBL training program, look at it, check
# that the stages, chained, compute exactly what the model computes, and train it on digits.
set -euo pipefail
cd "$(dirname "$0")/.."
llc=.venv/bin/llcompile
out=${1:-out/quickstart}
mkdir -p "$out"

echo "== llcompile models export resnet20"
$llc models export resnet20 -o "$out/resnet20.onnx" --input-shape 1,8,8 --num-classes 10 --force
echo
echo "== llcompile inspect (the model: layers, cut points, segments)"
$llc inspect "$out/resnet20.onnx"
echo
echo "== llcompile transform --strategy dbl --blocks 4"
$llc transform "$out/resnet20.onnx" -o "$out/resnet20-dbl" --strategy dbl --blocks 4 --force
echo
echo "== llcompile verify (onnxruntime: stage chain and eval model vs the source model)"
$llc verify "$out/resnet20-dbl"
echo
echo "== llcompile train --data digits (block-local training, torch backend)"
$llc train "$out/resnet20-dbl" --data digits --epochs 5 --batch-size 64 --lr 0.05 --run-dir "$out/run" --force
