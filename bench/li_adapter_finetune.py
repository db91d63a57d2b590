"""Train an embedding adapter with LlamaIndex's `EmbeddingAdapterFinetuneEngine`.

Runs INSIDE the LlamaIndex venv (`bench/_venv_li`), started by `bench_adapter.py`. It follows
LlamaIndex's own adapter notebook (`finetune_embedding_adapter.ipynb`): a `LinearLayer` for
4 epochs with the engine's defaults, and `TwoLayerNN(384, 1024, 384, bias=True,
add_residual=True)` for 25 epochs. The base model is `HuggingFaceEmbedding` on the same
bundled all-MiniLM-L6-v2 folder finetune_kit uses. Nothing else is changed.

    python li_adapter_finetune.py TRAIN.json BASE_MODEL_DIR OUT_DIR linear|two-layer EPOCHS RESULT.json
"""
import json, os, sys, time
from importlib.metadata import version

train_path, base_model, out_dir, kind, epochs, result_path = sys.argv[1:7]
epochs = int(epochs)

t0 = time.perf_counter()
from llama_index.finetuning import EmbeddingAdapterFinetuneEngine, EmbeddingQAFinetuneDataset
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.embeddings.adapter.utils import TwoLayerNN   # not exported by the package's __init__
t_import = time.perf_counter() - t0

train = EmbeddingQAFinetuneDataset.from_json(train_path)
print(f"[li] loaded {len(train.queries)} train queries, {len(train.corpus)} corpus entries", flush=True)

t1 = time.perf_counter()
embed_model = HuggingFaceEmbedding(model_name=base_model, device='cpu')
t_load = time.perf_counter() - t1

adapter_model = None
if kind == 'two-layer':
    adapter_model = TwoLayerNN(384, 1024, 384, bias=True, add_residual=True)
elif kind != 'linear':
    sys.exit(f"unknown adapter {kind!r}")

t2 = time.perf_counter()
engine = EmbeddingAdapterFinetuneEngine(train, embed_model, model_output_path=out_dir, adapter_model=adapter_model,
                                        epochs=epochs, verbose=False)
t_init = time.perf_counter() - t2
t3 = time.perf_counter()
engine.finetune()
t_finetune = time.perf_counter() - t3
print(f"[li] finetune() took {t_finetune:.1f} s", flush=True)

import torch
result = dict(
    adapter=kind, epochs=epochs, finetune_s=round(t_finetune, 2), engine_init_s=round(t_init, 2),
    model_load_s=round(t_load, 2), import_s=round(t_import, 2),
    n_train_queries=len(train.queries), model_dir=os.path.abspath(out_dir),
    engine_settings=dict(batch_size=engine.batch_size, steps_per_epoch=len(engine.loader), warmup_steps=engine._warmup_steps,
                         lr='2e-5 (train_model default)', max_seq_length=embed_model._model.max_seq_length,
                         adapter=type(engine.model).__name__, adapter_config=engine.model.get_config_dict()),
    torch_num_threads=torch.get_num_threads(),
    versions={p: version(p) for p in ('llama-index-finetuning', 'llama-index-core', 'llama-index-embeddings-adapter',
                                      'llama-index-embeddings-huggingface', 'sentence-transformers', 'transformers', 'torch')},
)
with open(result_path, 'w') as f: json.dump(result, f, indent=1)
