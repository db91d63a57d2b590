"""Train an embedding adapter with LlamaIndex's `EmbeddingAdapterFinetuneEngine`.

Runs INSIDE the LlamaIndex venv (`bench/_venv_li`), started by `bench_adapter.py`. It follows
LlamaIndex's own adapter notebook (`finetune_embedding_adapter.ipynb`): a `LinearLayer` for
4 epochs with the engine's defaults, and `TwoLayerNN(384, 1024, 384, bias=True,
add_residual=True)` for 25 epochs. The base model is `HuggingFaceEmbedding` on the same
bundled all-MiniLM-L6-v2 folder finetune_kit uses. Nothing else is changed.

    python li_adapter_finetune.py TRAIN.json BASE_MODEL_DIR OUT_DIR linear|two-layer EPOCHS RESULT.json
"""
import os, sys
from _li_common import Timer, argv, finetune, load_train, write_result

a = argv('train', 'base_model', 'out_dir', 'kind', 'epochs', 'result')
with Timer() as t_import:
    from llama_index.finetuning import EmbeddingAdapterFinetuneEngine
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.embeddings.adapter.utils import TwoLayerNN   # not exported by the package's __init__
train = load_train(a.train)
with Timer() as t_load: embed_model = HuggingFaceEmbedding(model_name=a.base_model, device='cpu')

adapter_model = None
if a.kind == 'two-layer':
    adapter_model = TwoLayerNN(384, 1024, 384, bias=True, add_residual=True)
elif a.kind != 'linear':
    sys.exit(f"unknown adapter {a.kind!r}")

with Timer() as t_init:
    engine = EmbeddingAdapterFinetuneEngine(train, embed_model, model_output_path=a.out_dir, adapter_model=adapter_model,
                                            epochs=a.epochs, verbose=False)
t_finetune = finetune(engine)

write_result(a.result, dict(
    adapter=a.kind, epochs=a.epochs, finetune_s=round(t_finetune, 2), engine_init_s=round(t_init.s, 2),
    model_load_s=round(t_load.s, 2), import_s=round(t_import.s, 2),
    n_train_queries=len(train.queries), model_dir=os.path.abspath(a.out_dir),
    engine_settings=dict(batch_size=engine.batch_size, steps_per_epoch=len(engine.loader), warmup_steps=engine._warmup_steps,
                         lr='2e-5 (train_model default)', max_seq_length=embed_model._model.max_seq_length,
                         adapter=type(engine.model).__name__, adapter_config=engine.model.get_config_dict())),
    ('llama-index-finetuning', 'llama-index-core', 'llama-index-embeddings-adapter',
     'llama-index-embeddings-huggingface', 'sentence-transformers', 'transformers', 'torch'))
