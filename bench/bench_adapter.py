"""Benchmark: LlamaIndex's embedding-adapter engine against finetune_kit's adapters.

Same split as the embedding benchmark (`bench_embeddings.py`), same base model (the bundled
all-MiniLM-L6-v2), same adapters and epochs, one run each:

1. SQuAD-Shifts Reddit (or `--data FILE`), split by paragraph (half / half, seed 0); 1,000 seeded
   training queries with the train-half corpus; every validation query against every validation
   paragraph (`_common.make_data`).
2. LlamaIndex: `llama-index-finetuning==0.4.2`'s `EmbeddingAdapterFinetuneEngine` over
   `HuggingFaceEmbedding` (bundled MiniLM folder), as LlamaIndex's adapter notebook runs it:
   a linear adapter for 4 epochs, and `TwoLayerNN(384, 1024, 384, bias=True, add_residual=True)`
   for 25 epochs (`bench/li_adapter_finetune.py`, in the venv `bench/_venv_li`).
3. finetune_kit: `ftk finetune-adapter --train TRAIN --out DIR --adapter KIND --epochs N`, each
   run with a fresh embedding cache, so its wall time includes embedding every text.
4. Every adapter (ours and LlamaIndex's: our loader reads its folders) and the base model scored
   by `ftk eval-retrieval --data VAL [--adapter DIR] --json`.
5. `bench/results/NAME.json` (everything) and `bench/results/NAME.md` (the table): NAME is `adapter`
   for SQuAD-Shifts Reddit, `adapter_<dataset>` for another file (`adapter_nyt`, `adapter_squaddev`),
   or `--name`; the run folder is `bench/_runs/NAME` unless `--run-dir` says otherwise.

Not run by CI (about 25 minutes on 2 CPU cores, nearly all of it LlamaIndex's 25-epoch run).

    python bench/bench_adapter.py                  # the full benchmark (SQuAD-Shifts Reddit)
    python bench/bench_adapter.py --reuse-li       # keep LlamaIndex's adapters and timings from the last run
    python bench/bench_adapter.py --data ../shared/data/squad_shifts/nyt_v1.0.json        # -> adapter_nyt
    python bench/bench_adapter.py --data ../shared/data/squad_shifts/squaddev_v1.1.json   # -> adapter_squaddev
"""
import json, shlex, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BENCH, add_dirs, base_model_dir, dataset_key, dataset_label, ensure_venv, evaluate, finish, fmt,
                     ftk_train, log, make_data, md_table, package_versions, parser, report_tail, run_header, run_li,
                     save_report)

LI_EXTRA = 'llama-index-embeddings-huggingface==0.8.0'    # HuggingFaceEmbedding: the engine needs an embed model
RUNS = [('linear', 4), ('two-layer', 25)]                   # LlamaIndex's adapter notebook: linear 4 epochs, two-layer 25


def results_name(data_file) -> str:
    "'adapter' for SQuAD-Shifts Reddit (the README's file), else 'adapter_<dataset>'."
    key = dataset_key(data_file)
    return 'adapter' if key == 'reddit' else f'adapter_{key}'


def run_ours(ftk, train_p, out, kind, epochs) -> dict:
    # a fresh embedding cache (ftk_train empties `out`): embedding is part of the time
    wall = ftk_train(ftk, ['finetune-adapter', '--train', train_p, '--out', out, '--adapter', kind, '--epochs', epochs],
                     out, what=f"finetune-adapter ({kind})")
    info = json.loads((out / 'finetune_kit.json').read_text())
    log(f"finetune_kit {kind}: whole command {wall:.1f} s (embedding {info['embed_s']} s, training {info['train_s']} s)")
    return {'command_wall_s': round(wall, 2), 'embed_s': info['embed_s'], 'train_s': info['train_s'],
            'steps': info['steps'], 'settings': {k: info[k] for k in ('epochs', 'batch_size', 'learning_rate', 'negatives', 'scale', 'transform')},
            'model_dir': str(out.resolve())}


def render(res: dict) -> list:
    "The report's markdown lines."
    s = res['scores']
    g = lambda d, k: None if not d else d.get(k)
    rows = [('base (all-MiniLM-L6-v2, no adapter)', s.get('base'), None, None)]
    for kind, epochs in RUNS:
        li, ours = res['llamaindex'].get(kind) or {}, res['finetune_kit'].get(kind) or {}
        li_t, our_t = li.get('finetune_s'), ours.get('command_wall_s')
        rows += [(f"LlamaIndex {kind}, {epochs} epochs", s.get(f'li_{kind}'), li_t, None),
                 (f"finetune_kit {kind}, {epochs} epochs", s.get(f'ftk_{kind}'), our_t,
                  f"{li_t / our_t:.0f}x" if li_t and our_t else None)]
    b5 = g(s.get('base'), 'hit@5')
    d = lambda m: f" ({100 * (m['hit@5'] - b5):+.1f})" if m and b5 is not None else ''
    return [
        '# Adapter fine-tuning: LlamaIndex engine vs finetune_kit', '',
        f"{dataset_label(res['data_file'])}, split by paragraph: {res['data']['n_train_queries']} training queries "
        f"({res['data']['n_train_corpus']} paragraphs); validation {res['data']['n_val_queries']} queries against "
        f"{res['data']['n_val_corpus']} paragraphs. Frozen base model all-MiniLM-L6-v2; adapters transform the query only. "
        f"CPU: {res['cpu']['model']}, {res['cpu']['usable_cpus']} cores.", '',
        *md_table(['model', 'hit@5', 'MRR@10', 'NDCG@10', 'wall time (s)', 'faster'],
                  [[name, fmt(g(m, 'hit@5')) + (d(m) if 'base' not in name else ''), fmt(g(m, 'mrr@10')),
                    fmt(g(m, 'ndcg@10')), fmt(t, pct=False, none='-'), x or '-'] for name, m, t, x in rows]), '',
        'Metrics in percent (hit@5 change from the base in brackets). Wall time: for LlamaIndex the engine\'s '
        '`finetune()` call, which embeds every pair of every batch of every epoch (model load and the engine\'s '
        'construction not counted); for finetune_kit the whole `ftk finetune-adapter` command, model load and '
        'embedding every training text once (fresh cache) included. All adapters scored by `ftk eval-retrieval --adapter DIR` '
        "(LlamaIndex's adapter folders load there unchanged).", '',
        *report_tail(res),
    ]


def main():
    ap = parser(__doc__)
    ap.add_argument('--n-train', type=int, default=1000)
    ap.add_argument('--seed', type=int, default=0)
    add_dirs(ap, None, venv=True)
    ap.add_argument('--name', default=None, help="results file stem, bench/results/NAME.{json,md} (default: 'adapter' "
                    "for SQuAD-Shifts Reddit, else 'adapter_<dataset>', e.g. adapter_nyt); the run dir defaults to bench/_runs/NAME")
    ap.add_argument('--reuse-li', action='store_true', help="reuse LlamaIndex's adapters and timings from the last run in --run-dir")
    args = ap.parse_args()

    name = args.name or results_name(args.data)
    run_dir = (args.run_dir or BENCH / '_runs' / name).resolve(); run_dir.mkdir(parents=True, exist_ok=True)
    ftk, base = shlex.split(args.ftk), base_model_dir()
    res = dict(**run_header(__file__), seed=args.seed, runs=RUNS, data_file=str(args.data.resolve()), base_model=str(base),
               scores={}, llamaindex={}, finetune_kit={}, errors=[], notes=[], versions={'main': package_versions()})
    log(f"data set: {dataset_label(args.data)}; results: {args.results_dir / name}.{{json,md}}; run dir: {run_dir}")

    log('1/5 data')
    train_p, val_p, res['data'] = make_data(args.data, run_dir, args.n_train, args.seed)

    log('2/5 LlamaIndex engine')
    py = None
    for kind, epochs in RUNS:
        out, res_p = run_dir / f'li_{kind}', run_dir / f'li_{kind}_result.json'
        if args.reuse_li and res_p.exists() and out.exists():
            res['llamaindex'][kind] = json.loads(res_p.read_text())
            res['notes'].append(f"LlamaIndex {kind} adapter and timing reused from an earlier run ({res_p.name}).")
            continue
        if py is None: py = ensure_venv(args.venv, [LI_EXTRA], '.bench_adapter_ready')
        try: res['llamaindex'][kind] = run_li(py, 'li_adapter_finetune.py', [train_p, base, out, kind, epochs, res_p],
                                              run_dir, f"LlamaIndex {kind}")
        except Exception as e: res['errors'].append(str(e)); log(f"ERROR: {e}")

    log('3/5 finetune_kit')
    for kind, epochs in RUNS:
        try: res['finetune_kit'][kind] = run_ours(ftk, train_p, run_dir / f'ftk_{kind}', kind, epochs)
        except Exception as e: res['errors'].append(str(e)); log(f"ERROR: {e}")

    log('4/5 evaluation')
    cache = run_dir / 'eval_embeddings.sqlite'
    cache.unlink(missing_ok=True)
    models = {'base': ['--model', base]}
    for kind, _ in RUNS:
        if kind in res['llamaindex']: models[f'li_{kind}'] = ['--adapter', run_dir / f'li_{kind}', '--model', base, '--cache', cache]
        if kind in res['finetune_kit']: models[f'ftk_{kind}'] = ['--adapter', run_dir / f'ftk_{kind}', '--cache', cache]
    for key, extra in models.items():
        log(f"evaluating {key}")
        try: res['scores'][key] = evaluate(ftk, val_p, *extra)
        except Exception as e: res['errors'].append(f"{key}: {e}"); log(f"ERROR: {e}")

    log('5/5 report')
    res['versions']['llamaindex_venv'] = next((r['versions'] for r in res['llamaindex'].values()), {})
    finish(res)
    print(save_report(res, args.results_dir, name, render))
    if res['errors']: sys.exit(f"finished with {len(res['errors'])} error(s): see above")


if __name__ == '__main__':
    main()
