#!/usr/bin/env bash
# The whole pipeline on one CUDA GPU, as a user runs it: builds a corpus of 100,000 documents (100 MB) from real text
# installed on the machine (benchmarks/peers_corpus.py), runs `llmpipe run configs/gpu.yaml` (Dask data flow,
# GPT-2-124M-class pretraining in bf16 with torch.compile, three fine-tuned tasks, evaluation), then prints each
# stage's wall time, pretraining tokens/s and MFU inside the pipeline, and the evaluation table (last line: one
# JSON object; benchmarks/gpu_pipeline.py).
#
#   bash benchmarks/gpu_pipeline.sh                         # on a GPU machine, from anywhere
#   bash benchmarks/gpu_pipeline.sh --workdir /data/run     # where the corpus, data root and config go
#   bash benchmarks/gpu_pipeline.sh --dry-run               # the same chain at tiny sizes on CPU (CI runs this)
#
# The Python: benchmarks/gpu_env.sh (a preinstalled CUDA torch, or one installed into a venv; llmpipe's libraries
# from carried wheels in .whl/ or the package index, where missing). --dry-run uses $PYTHON (default python3)
# as it is: the project installed as README's quick start says.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ " $* " == *" --dry-run "* ]]; then
  PY=${PYTHON:-python3}
else
  . benchmarks/gpu_env.sh
  cuda_python prefect=prefect prefect_dask=prefect-dask pydantic=pydantic yaml=pyyaml numpy=numpy pyarrow=pyarrow \
              datasets=datasets datasketch=datasketch langdetect=langdetect tokenizers=tokenizers \
              safetensors=safetensors sacrebleu=sacrebleu rouge_score=rouge-score tensorboard=tensorboard \
              matplotlib=matplotlib tqdm=tqdm
fi
export PYTHONUNBUFFERED=1
"$PY" benchmarks/gpu_pipeline.py "$@"
