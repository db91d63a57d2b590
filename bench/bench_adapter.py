"""Benchmark: LlamaIndex's embedding-adapter engine against finetune_kit's adapters.

Same split as the embedding benchmark (`bench_embeddings.py`), same base model (the bundled
all-MiniLM-L6-v2), same adapters, one run each; LlamaIndex with its notebook's epochs, finetune_kit
with its defaults (epochs and reg chosen on dev splits of the training data):

1. SQuAD-Shifts Reddit (or `--data FILE`), split by paragraph (half / half, seed 0); 1,000 seeded
   training queries with the train-half corpus; every validation query against every validation
   paragraph (`_common.make_data`).
2. LlamaIndex: `llama-index-finetuning==0.4.2`'s `EmbeddingAdapterFinetuneEngine` over
   `HuggingFaceEmbedding` (bundled MiniLM folder), as LlamaIndex's adapter notebook runs it:
   a linear adapter for 4 epochs, and `TwoLayerNN(384, 1024, 384, bias=True, add_residual=True)`
   for 25 epochs (`bench/li_adapter_finetune.py`, in the venv `bench/_venv_li`).
3. finetune_kit: `ftk finetune-adapter --train TRAIN --out DIR --adapter KIND` (default epochs: chosen on
   three seeded by-paragraph dev splits of TRAIN, then trained on all of it), each run with a fresh
   embedding cache, so its wall time includes embedding every text and choosing the epochs.
4. Every adapter (ours and LlamaIndex's: our loader reads its folders) and the base model scored
   by `ftk eval-retrieval --data VAL [--adapter DIR] --json`.
5. `bench/results/NAME.json` (everything) and `bench/results/NAME.md` (the table): NAME is `adapter`
   for SQuAD-Shifts Reddit, `adapter_<dataset>` for another file (`adapter_nyt`, `adapter_squaddev`),
   or `--name`; the run folder is `bench/_runs/NAME` unless `--run-dir` says otherwise.

Not run by CI (about 25 minutes on 2 CPU cores, nearly all of it LlamaIndex's 25-epoch run).

    python bench/bench_adapter.py                  # the full benchmark (SQuAD-Shifts Reddit)
    python bench/bench_adapter.py --reuse-li       # keep LlamaIndex's adapters and timings from the last run
    python bench/bench_adapter.py --li-from OLD.json   # LlamaIndex's rows (scores, timings) from an earlier results file
    python bench/bench_adapter.py --data ../shared/data/squad_shifts/nyt_v1.0.json        # -> adapter_nyt
    python bench/bench_adapter.py --data ../shared/data/squad_shifts/squaddev_v1.1.json   # -> adapter_squaddev
"""
import json, os, shlex, sys
from pathlib import Path

# Threads that sleep instead of spinning while they wait: on a shared (busy) machine, spinning OpenMP threads
# make small torch ops 10-50x slower. Set for every process this script runs, LlamaIndex's included.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BENCH, DATA, add_dirs, base_model_dir, dataset_key, dataset_label, ensure_venv, evaluate, finish, fmt,
                     ftk_train, log, make_data, md_table, package_versions, parser, report_tail, run_header, run_li,
                     save_report)

LI_EXTRA = 'llama-index-embeddings-huggingface==0.8.0'    # HuggingFaceEmbedding: the engine needs an embed model
RUNS = [('linear', 4), ('two-layer', 25)]                   # LlamaIndex's adapter notebook: linear 4 epochs, two-layer 25
SETTINGS = ('epochs', 'reg', 'batch_size', 'learning_rate', 'negatives', 'scale', 'transform')


def results_name(data_file) -> str:
    "'adapter' for SQuAD-Shifts Reddit (the README's file), else 'adapter_<dataset>'."
    key = dataset_key(data_file)
    return 'adapter' if key == 'reddit' else f'adapter_{key}'


def run_ours(ftk, train_p, out, kind) -> dict:
    "The defaults: no --epochs, so the dev splits choose epochs and reg. A fresh embedding cache (ftk_train empties `out`)."
    wall = ftk_train(ftk, ['finetune-adapter', '--train', train_p, '--out', out, '--adapter', kind], out,
                     what=f"finetune-adapter ({kind})")
    info = json.loads((out / 'finetune_kit.json').read_text())
    log(f"finetune_kit {kind}: whole command {wall:.1f} s (embedding {info['embed_s']} s, choosing and training "
        f"{info['train_s']} s); dev splits chose {info['epochs']} epochs, reg {info['reg']}")
    return {'command_wall_s': round(wall, 2), 'embed_s': info['embed_s'], 'train_s': info['train_s'], 'steps': info['steps'],
            'settings': {k: info[k] for k in SETTINGS}, 'selection': info['selection'], 'model_dir': str(out.resolve())}


def li_from(path: Path, res: dict):
    "LlamaIndex's rows (results and scores) from an earlier results file of this benchmark, said so in the notes."
    old = json.loads(path.read_text())
    if Path(old['data_file']).name != Path(res['data_file']).name or old['data'] != res['data']:
        sys.exit(f"{path}: made on other data ({old['data_file']}, {old['data']})")
    for kind, _ in RUNS:
        res['llamaindex'][kind] = {**old['llamaindex'][kind], 'reused_from': str(path)}
        res['scores'][f'li_{kind}'] = old['scores'][f'li_{kind}']
    res['notes'].append(f"LlamaIndex rows (scores and timings) not re-run: taken from {path.name}, the run of "
                        f"{old['finished_at']} (load average {old['loadavg_start']:.2f} at its start), same data and split.")


def epochs_str(n: int) -> str: return f"{n} epoch{'' if n == 1 else 's'}"


def selection_lines(res: dict) -> list:
    "What the dev splits chose for each adapter: epochs, reg, and the mean dev scores there."
    out = []
    for kind, _ in RUNS:
        sel = ((res['finetune_kit'].get(kind) or {}).get('selection')) or {}
        if not sel: continue
        sizes = ', '.join(str(sp['n_dev_queries']) for sp in sel['splits'])
        out.append(f"- {kind}: {epochs_str(sel['epochs'])} (of 1-{sel['max_epochs']}), reg {sel['reg']} (of {sel['regs']}); mean dev "
                   f"hit@5 {100 * sel['dev']['hit@5']:.1f}, MRR@10 {100 * sel['dev']['mrr@10']:.1f} over {len(sel['splits'])} "
                   f"splits holding out {sel['dev_frac']:.0%} of the training paragraphs ({sizes} dev questions)")
    return ['What the dev splits chose (training data only):', '', *out] if out else []


def render(res: dict) -> list:
    "The report's markdown lines."
    s = res['scores']
    g = lambda d, k: None if not d else d.get(k)
    rows = [('base (all-MiniLM-L6-v2, no adapter)', s.get('base'), None, None)]
    for kind, epochs in RUNS:
        li, ours = res['llamaindex'].get(kind) or {}, res['finetune_kit'].get(kind) or {}
        li_t, our_t, st = li.get('finetune_s'), ours.get('command_wall_s'), ours.get('settings') or {}
        chosen = f"{epochs_str(st['epochs'])}, reg {st['reg']}, chosen on dev splits" if st else 'defaults'
        if li or f'li_{kind}' in s: rows.append((f"LlamaIndex {kind}, {epochs} epochs", s.get(f'li_{kind}'), li_t, None))
        rows.append((f"finetune_kit {kind} ({chosen})", s.get(f'ftk_{kind}'), our_t, f"{li_t / our_t:.0f}x" if li_t and our_t else None))
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
        'embedding every training text once (fresh cache) and choosing the epochs and reg on three dev splits included. '
        "All adapters scored by `ftk eval-retrieval --adapter DIR` (LlamaIndex's adapter folders load there unchanged).", '',
        f"Every process (LlamaIndex's too) ran with OMP_WAIT_POLICY={res.get('omp_wait_policy', 'unset')}.", '',
        *selection_lines(res), '',
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
    ap.add_argument('--li-from', type=Path, default=None, help="take LlamaIndex's rows (scores, timings) from this earlier results JSON")
    ap.add_argument('--no-li', action='store_true', help="skip LlamaIndex (its wall time does not depend on the data set: "
                    "1,000 questions, fixed epochs); the table then shows the base and finetune_kit only")
    ap.add_argument('--design', action='store_true', help="instead: measure ways of choosing the epochs and reg on the TRAINING "
                    "halves of Reddit, NYT and SQuAD dev (no validation question) -> bench/results/adapter_design.{json,md}")
    args = ap.parse_args()
    if args.design: return design(args)

    name = args.name or results_name(args.data)
    run_dir = (args.run_dir or BENCH / '_runs' / name).resolve(); run_dir.mkdir(parents=True, exist_ok=True)
    ftk, base = shlex.split(args.ftk), base_model_dir()
    res = dict(**run_header(__file__), omp_wait_policy=os.environ['OMP_WAIT_POLICY'], seed=args.seed, runs=RUNS, data_file=str(args.data.resolve()), base_model=str(base),
               scores={}, llamaindex={}, finetune_kit={}, errors=[], notes=[], versions={'main': package_versions()})
    log(f"data set: {dataset_label(args.data)}; results: {args.results_dir / name}.{{json,md}}; run dir: {run_dir}")

    log('1/5 data')
    train_p, val_p, res['data'] = make_data(args.data, run_dir, args.n_train, args.seed)

    log('2/5 LlamaIndex engine')
    py = None
    if args.li_from: li_from(args.li_from, res)
    if args.no_li: res['notes'].append("LlamaIndex not run on this data set (--no-li): see the SQuAD-Shifts Reddit run for its wall time.")
    for kind, epochs in RUNS if not (args.li_from or args.no_li) else []:
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
    for kind, _ in RUNS:
        try: res['finetune_kit'][kind] = run_ours(ftk, train_p, run_dir / f'ftk_{kind}', kind)
        except Exception as e: res['errors'].append(str(e)); log(f"ERROR: {e}")

    log('4/5 evaluation')
    cache = run_dir / 'eval_embeddings.sqlite'
    cache.unlink(missing_ok=True)
    models = {'base': ['--model', base]}
    for kind, _ in RUNS:
        if kind in res['llamaindex'] and not args.li_from: models[f'li_{kind}'] = ['--adapter', run_dir / f'li_{kind}', '--model', base, '--cache', cache]
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


# ---------------------------------------------------------------- --design: how the defaults were chosen
DESIGN_FILES = ('reddit_v1.0.json', 'nyt_v1.0.json', 'squaddev_v1.1.json')
GRID, MAX_EPOCHS, N_SPLITS = (0.03, 0.1, 0.3, 1.0), 30, 3


def design_curves(kind, pt, val, vecs) -> list:
    "Dev scores after every epoch, for 3 dev splits x GRID; split 0's snapshots also scored on `val` (for 'keep')."
    import torch
    from finetune_kit.adapter import AdapterData, AdapterTrainer, dev_split, dev_metrics, make_adapter
    out = []
    for k in range(N_SPLITS):
        fit, dev = (AdapterData.from_dataset(x, vecs) for x in dev_split(pt, 0.2, k))
        for reg in GRID:
            torch.manual_seed(0); m = make_adapter(kind, fit.Q.shape[1])
            def score(ep):
                r = dict(split=k, reg=reg, epoch=ep, **dev_metrics(m, dev))
                if k == 0: r.update({f'val_{a}': v for a, v in dev_metrics(m, val).items()})
                out.append(r)
            AdapterTrainer(m, fit, MAX_EPOCHS, reg=reg).train(on_epoch=score)
    return out


def design_choice(curves, regs, splits, metric) -> tuple:
    "The (epochs, reg) with the best mean dev `metric` over `splits` (ties: fewer epochs)."
    import numpy as np
    pts = {(r['reg'], r['epoch']) for r in curves if r['reg'] in regs}
    mean = lambda key: np.mean([r[metric] for r in curves if (r['reg'], r['epoch']) == key and r['split'] in splits])
    reg, ep = max(sorted(pts), key=lambda key: (mean(key), -key[1]))
    return ep, reg


def design(args):
    """Which way of choosing the epochs and reg to ship, measured without any validation question: each data set's
    TRAINING half (the benchmark's split) is split again by paragraph, half / half (seeds 1, 2); 1,000 seeded training
    questions come from one half, and every question of the other half scores the result."""
    import torch
    from finetune_kit.core import load_squad, sample_queries, split_by_doc
    from finetune_kit.embedders import CachedEmbedder, STEmbedder
    from finetune_kit.adapter import AdapterData, AdapterTrainer, REGS, dev_metrics, embed_texts, make_adapter
    run_dir = (args.run_dir or BENCH / '_runs' / 'adapter_design').resolve(); run_dir.mkdir(parents=True, exist_ok=True)
    emb = CachedEmbedder(STEmbedder(show_progress=False), run_dir / 'embeddings.sqlite')
    res = dict(**run_header(__file__), omp_wait_policy=os.environ['OMP_WAIT_POLICY'], rows=[], versions={'main': package_versions()})
    for f in DESIGN_FILES:
        train_half = split_by_doc(load_squad(DATA / f), val_frac=0.5, seed=args.seed)[0]
        for ps in (1, 2):
            half, held = split_by_doc(train_half, val_frac=0.5, seed=ps)
            pt = sample_queries(half, args.n_train, seed=ps)
            vecs = {**embed_texts(pt, emb), **embed_texts(held, emb)}
            full, val = AdapterData.from_dataset(pt, vecs), AdapterData.from_dataset(held, vecs)
            base = dev_metrics(torch.nn.Identity(), val)
            def final(kind, ep, reg):
                torch.manual_seed(0); m = make_adapter(kind, full.Q.shape[1])
                AdapterTrainer(m, full, ep, reg=reg).train()
                return dev_metrics(m, val)
            for kind in ('linear', 'two-layer'):
                log(f"design: {f} half-split {ps} {kind}")
                curves, shipped = design_curves(kind, pt, val, vecs), tuple(REGS[kind])
                other = (0.1,) if kind == 'linear' else GRID
                row = lambda how, ep, reg, m: res['rows'].append(dict(data=dataset_key(f), split_seed=ps, kind=kind, how=how,
                    epochs=ep, reg=reg, **{f'gain_{a}': 100 * (m[a] - base[a]) for a in ('hit@5', 'mrr@10')}))
                old = {'linear': 8, 'two-layer': 25}[kind]
                row('old defaults (fixed epochs, reg 0.1)', old, 0.1, final(kind, old, 0.1))
                for how, regs, splits, metric, keep in [
                        ('shipped: 3 splits, MRR@10, trained again on all', shipped, range(3), 'mrr@10', False),
                        ('1 split instead of 3', shipped, [0], 'mrr@10', False),
                        ('hit@5 instead of MRR@10', shipped, range(3), 'hit@5', False),
                        (f"reg from {list(other)} instead", other, range(3), 'mrr@10', False),
                        ('1 split, keep its adapter (80% of the data)', shipped, [0], 'mrr@10', True)]:
                    ep, reg = design_choice(curves, regs, list(splits), metric)
                    if keep:
                        snap = next(r for r in curves if (r['split'], r['reg'], r['epoch']) == (0, reg, ep))
                        m = {a: snap[f'val_{a}'] for a in ('hit@5', 'mrr@10')}
                    else: m = final(kind, ep, reg)
                    row(how, ep, reg, m)
                best = max((r for r in curves if r['split'] == 0), key=lambda r: r['val_hit@5'])
                row('hindsight: best split-0 snapshot on the scoring half (a ceiling, not a method)', best['epoch'], best['reg'],
                    {a: best[f'val_{a}'] for a in ('hit@5', 'mrr@10')})
    finish(res)
    print(save_report(res, args.results_dir, 'adapter_design', render_design))


def render_design(res: dict) -> list:
    "Mean gains per way of choosing, per data set."
    import pandas as pd
    df = pd.DataFrame(res['rows'])
    lines = ['# Adapter defaults: how the epochs and reg are chosen', '', design.__doc__.replace('\n    ', ' '), '',
             "Gain over the base model (points of hit@5 / MRR@10) on the scoring half, mean of the two half-splits. "
             "Every way trains with finetune_kit's own `AdapterTrainer`; dev splits hold out 20% of the training paragraphs.", '']
    for kind in ('linear', 'two-layer'):
        d = df[df.kind == kind]
        hows = list(dict.fromkeys(d.how))
        t = d.groupby(['how', 'data'])[['gain_hit@5', 'gain_mrr@10']].mean()
        sets = list(dict.fromkeys(d.data))
        rows = [[h, *[f"{t.loc[(h, x), 'gain_hit@5']:+.2f} / {t.loc[(h, x), 'gain_mrr@10']:+.2f}" for x in sets],
                 f"{d[d.how == h]['gain_hit@5'].mean():+.2f} / {d[d.how == h]['gain_mrr@10'].mean():+.2f}"] for h in hows]
        lines += [f'## {kind}', '', *md_table(['way of choosing', *sets, 'mean'], rows), '']
    return lines + report_tail(res)


if __name__ == '__main__':
    main()
