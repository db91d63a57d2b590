"""Fine-tune an embedding model with LlamaIndex's `SentenceTransformersFinetuneEngine`.

Runs INSIDE the LlamaIndex venv (`bench/_venv_li`), started by `bench_embeddings.py`.
It uses the engine as its docs show: the dataset, the base model, the output path and the
epochs are passed; every other argument keeps the engine's default but one:
`evaluation_steps=0`. The default (50) with no `val_dataset` makes recent sentence-transformers
(6.2 here) refuse to train ("eval_strategy is STEPS but no eval_dataset or evaluator"); with no evaluator
there is nothing to evaluate anyway, so 0 changes no step of training, only lets it start.

    python li_embed_finetune.py TRAIN.json BASE_MODEL_DIR OUT_DIR EPOCHS RESULT.json
"""
import inspect, os
from importlib.metadata import version
from _li_common import Timer, argv, finetune, load_train, write_result

a = argv('train', 'base_model', 'out_dir', 'epochs', 'result')
with Timer() as t_import:
    from llama_index.finetuning import SentenceTransformersFinetuneEngine
train = load_train(a.train)
with Timer() as t_init:          # model load + building the examples
    engine = SentenceTransformersFinetuneEngine(train, model_id=a.base_model, model_output_path=a.out_dir, epochs=a.epochs,
                                                evaluation_steps=0)

# what the defaults amount to, for the report (finetune() passes no optimizer settings,
# so `SentenceTransformer.fit`'s own defaults apply)
fit_sig = inspect.signature(engine.model.fit).parameters
fit_defaults = dict(lr=fit_sig['optimizer_params'].default.get('lr'), scheduler=fit_sig['scheduler'].default,
                    weight_decay=fit_sig['weight_decay'].default,
                    batch_size=engine.loader.batch_size, warmup_steps=engine.warmup_steps,
                    steps_per_epoch=len(engine.loader), loss=type(engine.loss).__name__,
                    evaluator=None if engine.evaluator is None else type(engine.evaluator).__name__,
                    evaluation_steps=engine.evaluation_steps, max_seq_length=engine.model.max_seq_length, device=str(engine.model.device))
print(f"[li] engine settings: {fit_defaults}", flush=True)
t_finetune = finetune(engine)

write_result(a.result, dict(
    finetune_s=round(t_finetune, 2), engine_init_s=round(t_init.s, 2), import_s=round(t_import.s, 2),
    epochs=a.epochs, n_train_queries=len(train.queries), model_dir=os.path.abspath(a.out_dir),
    engine_settings=fit_defaults,
    deviations_from_defaults=['evaluation_steps=0 (the default 50 with no val_dataset makes sentence-transformers '
                              f"{version('sentence-transformers')} refuse to train; with no evaluator it changes no training step)"]),
    ('llama-index-finetuning', 'llama-index-core', 'sentence-transformers', 'transformers', 'torch', 'datasets', 'accelerate', 'mistralai'))
