"""Benchmark: LlamaIndex's embedding fine-tuning engine against finetune_kit's.

Same base model (the bundled all-MiniLM-L6-v2), same training data, same epochs, one run:

1. SQuAD-Shifts Reddit, split by paragraph (half / half, seed 0); 1,000 seeded training
   queries with the train-half corpus; every validation query against every validation
   paragraph (`_common.make_data`). Both saved as LlamaIndex-format JSON in the run dir.
2. LlamaIndex: `llama-index-finetuning==0.4.2`'s `SentenceTransformersFinetuneEngine`
   with its defaults, in its own venv (`bench/_venv_li`, made once and reused), run by
   `bench/li_embed_finetune.py`.
3. finetune_kit: `ftk finetune-embeddings --train TRAIN --out DIR --epochs N`.
4. Every model (base, LlamaIndex's, ours) scored by `ftk eval-retrieval ... --json`.
5. `bench/results/embeddings.json` (everything) and `bench/results/embeddings.md` (the table).

Not run by CI: it trains two models (about 10-20 minutes on 2 CPU cores).

    python bench/bench_embeddings.py                 # the full benchmark
    python bench/bench_embeddings.py --skip-ours     # LlamaIndex half only
    python bench/bench_embeddings.py --reuse-li      # keep the LlamaIndex model and timing of the last run
"""
import json, shlex, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BENCH, add_dirs, base_model_dir, dataset_label, ensure_venv, evaluate, finish, fmt, ftk_train, log,
                     make_data, md_table, package_versions, parser, report_tail, run_header, run_li, save_report)


def run_ours(ftk: list, train_p: Path, out: Path, epochs: int) -> dict:
    wall = ftk_train(ftk, ['finetune-embeddings', '--train', train_p, '--out', out, '--epochs', epochs], out)
    log(f"finetune_kit: whole command {wall:.1f} s")
    return {'command_wall_s': round(wall, 2), 'model_dir': str(out.resolve())}


def render(res: dict) -> list:
    "The report's markdown lines."
    s, li, ours = res['scores'], res.get('llamaindex') or {}, res.get('finetune_kit') or {}
    rows = [('base (all-MiniLM-L6-v2, no training)', s.get('base'), None),
            (f"LlamaIndex {res['versions']['llamaindex_venv'].get('llama-index-finetuning', '?')} engine",
             s.get('llamaindex'), li.get('finetune_s')),
            ('finetune_kit', s.get('finetune_kit'), ours.get('command_wall_s'))]
    g = lambda d, k: None if not d else d.get(k)
    return [
        '# Embedding fine-tuning: LlamaIndex engine vs finetune_kit', '',
        f"{dataset_label(res['data_file'])}, split by paragraph: {res['data']['n_train_queries']} training queries "
        f"({res['data']['n_train_corpus']} paragraphs); validation {res['data']['n_val_queries']} queries against "
        f"{res['data']['n_val_corpus']} paragraphs. Base model all-MiniLM-L6-v2, {res['epochs']} epochs for both. "
        f"CPU: {res['cpu']['model']}, {res['cpu']['usable_cpus']} cores.", '',
        *md_table(['model', 'hit@5', 'MRR@10', 'NDCG@10', 'training wall time (s)'],
                  [[name, fmt(g(m, 'hit@5')), fmt(g(m, 'mrr@10')), fmt(g(m, 'ndcg@10')), fmt(t, pct=False, none='-')]
                   for name, m, t in rows]), '',
        'Metrics in percent. Training wall time: for LlamaIndex the `finetune()` call only '
        f"(its whole script, model load and imports included: {fmt(li.get('script_wall_s'), pct=False)} s); "
        'for finetune_kit the whole `ftk finetune-embeddings` command, model load included.', '',
        *report_tail(res),
    ]


def main():
    ap = parser(__doc__)
    ap.add_argument('--epochs', type=int, default=2, help="2 is the engine's default")
    ap.add_argument('--n-train', type=int, default=1000)
    ap.add_argument('--seed', type=int, default=0)
    add_dirs(ap, BENCH / '_runs' / 'embeddings', venv=True)
    ap.add_argument('--skip-ours', action='store_true', help='train and score only the LlamaIndex model')
    ap.add_argument('--reuse-li', action='store_true',
                    help='reuse the LlamaIndex model and timing from the last run in --run-dir (for iterating on ours)')
    args = ap.parse_args()

    run_dir = args.run_dir.resolve(); run_dir.mkdir(parents=True, exist_ok=True)
    ftk, base = shlex.split(args.ftk), base_model_dir()
    li_dir, ours_dir = run_dir / 'model_llamaindex', run_dir / 'model_finetune_kit'
    res = dict(**run_header(__file__), epochs=args.epochs, seed=args.seed, data_file=str(args.data.resolve()),
               base_model=str(base), scores={}, errors=[], notes=[],
               versions={'main': package_versions(), 'llamaindex_venv': {}})
    t_all = time.perf_counter()

    log('1/5 data')
    train_p, val_p, res['data'] = make_data(args.data, run_dir, args.n_train, args.seed)

    log('2/5 LlamaIndex engine')
    li_res_p = run_dir / 'li_result.json'
    if args.reuse_li and li_res_p.exists() and li_dir.exists():
        res['llamaindex'] = json.loads(li_res_p.read_text())
        res['notes'].append(f"LlamaIndex model and timing reused from an earlier run ({li_res_p}).")
        if res['llamaindex']['epochs'] != args.epochs: sys.exit('--reuse-li: the saved LlamaIndex run used other epochs')
        log(f"reusing {li_dir} (finetune() {res['llamaindex']['finetune_s']} s)")
    else:
        res['llamaindex'] = run_li(ensure_venv(args.venv), 'li_embed_finetune.py',
                                   [train_p, base, li_dir, args.epochs, li_res_p], run_dir)
    res['versions']['llamaindex_venv'] = res['llamaindex']['versions']
    res['notes'] += [f"LlamaIndex engine run with {d}." for d in res['llamaindex'].get('deviations_from_defaults', [])]

    log('3/5 finetune_kit')
    res['finetune_kit'] = None
    if args.skip_ours: res['notes'].append('finetune_kit was not trained (--skip-ours).')
    else:
        try: res['finetune_kit'] = run_ours(ftk, train_p, ours_dir, args.epochs)
        except Exception as e: res['errors'].append(str(e)); log(f"ERROR: {e}")

    log('4/5 evaluation')
    models = {'base': base, 'llamaindex': li_dir}
    if res['finetune_kit']: models['finetune_kit'] = ours_dir
    for name, path in models.items():
        log(f"evaluating {name}: {path}")
        try: res['scores'][name] = evaluate(ftk, val_p, '--model', path)
        except Exception as e: res['errors'].append(f"{name}: {e}"); log(f"ERROR: {e}")

    log('5/5 report')
    finish(res); res['total_wall_s'] = round(time.perf_counter() - t_all, 1)
    print(save_report(res, args.results_dir, 'embeddings', render))
    if res['errors']: sys.exit(f"finished with {len(res['errors'])} error(s): see above")


if __name__ == '__main__':
    main()
