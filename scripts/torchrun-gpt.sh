#!/usr/bin/env bash
# Multi-node (or single-node) training launched by torchrun. Run the same command on every machine,
# with NODE_RANK 0 .. NNODES-1 and MASTER_ADDR = an address of node 0 that the others can reach:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/torchrun-gpt.sh            # on node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 scripts/torchrun-gpt.sh            # on node 1
# Extra arguments go to `lightning-llm fit`, e.g. --data.path "corpus/*.txt" --trainer.max_steps 5000.
# Lightning sees torchrun's environment (TorchElasticEnvironment) and lets torchrun own the processes;
# devices and num_nodes must match what torchrun starts, which this script passes for you.
# Env: CONFIG (default configs/gpt2-124m.yaml), PRESET (configs/trainer/fsdp2.yaml; or ddp.yaml, fsdp.yaml),
#      NPROC_PER_NODE (default: the GPUs nvidia-smi lists), MASTER_PORT (29500), PYTHON (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-configs/gpt2-124m.yaml}
PRESET=${PRESET:-configs/trainer/fsdp2.yaml}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
NPROC_PER_NODE=${NPROC_PER_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l)}
if [ "$NPROC_PER_NODE" -lt 1 ]; then
  echo "error: no GPU found by nvidia-smi; set NPROC_PER_NODE (and pass --trainer.accelerator cpu for CPUs)" >&2
  exit 2
fi
exec "$PYTHON" -m torch.distributed.run \
  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  -m lightning_llm fit --config "$CONFIG" --config "$PRESET" \
  --trainer.devices "$NPROC_PER_NODE" --trainer.num_nodes "$NNODES" "$@"
