#!/bin/bash
#SBATCH --job-name=labctl-j0123456789a
#SBATCH --output=/ptmp/abc123/labctl/j0123456789a/logs/slurm-%j.out
#SBATCH --time=00:30:00
#SBATCH --mem=4G
#SBATCH --cpus-per-task=4
#SBATCH --partition=general
#SBATCH --account=lab_acct
# labctl job j0123456789a: file_stats on dataset 20211215_093527
set -euo pipefail
module purge
module load anaconda/3/2023.03
cd /ptmp/abc123/labctl/j0123456789a
export PYTHONPATH=/ptmp/abc123/labctl/j0123456789a/code
split_idx=0
exec python3 -m pipelines run file_stats --dataset 20211215_093527 --inputs /ptmp/abc123/labctl/j0123456789a/inputs --outputs /ptmp/abc123/labctl/j0123456789a/outputs --options '{"label": "it'"'"'s $(rm -rf ~); `x` \"q\"", "num_splits": 1}' --split-idx "$split_idx" --num-splits 1
