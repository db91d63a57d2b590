"""Shared by the scripts that run INSIDE the LlamaIndex venv (`li_*_finetune.py`): that venv has no
finetune_kit, so they cannot use `_common.py`. Python finds this file beside the script it runs."""
import json, sys, time
from importlib.metadata import version
from types import SimpleNamespace


def argv(*names) -> SimpleNamespace:
    "The script's positional arguments by name (`epochs` as an int); usage and exit when they are not all there."
    if len(sys.argv) < len(names) + 1: sys.exit(f"usage: python {sys.argv[0]} {' '.join(n.upper() for n in names)}")
    a = SimpleNamespace(**dict(zip(names, sys.argv[1:])))
    a.epochs = int(a.epochs)
    return a


class Timer:
    "`with Timer() as t: ...`, then `t.s` is the seconds it took."
    def __enter__(self): self.t0 = time.perf_counter(); return self
    def __exit__(self, *exc): self.s = time.perf_counter() - self.t0


def load_train(path):
    from llama_index.finetuning import EmbeddingQAFinetuneDataset
    train = EmbeddingQAFinetuneDataset.from_json(path)
    print(f"[li] loaded {len(train.queries)} train queries, {len(train.corpus)} corpus entries", flush=True)
    return train


def finetune(engine) -> float:
    "`engine.finetune()`; the seconds it took."
    with Timer() as t: engine.finetune()
    print(f"[li] finetune() took {t.s:.1f} s", flush=True)
    return t.s


def write_result(path, result: dict, packages):
    "RESULT.json: `result`, torch's thread count and the venv's versions of `packages`."
    import torch
    result = dict(result, torch_num_threads=torch.get_num_threads(), versions={p: version(p) for p in packages})
    with open(path, 'w') as f: json.dump(result, f, indent=1)
