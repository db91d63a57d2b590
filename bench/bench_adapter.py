"""Benchmark: LlamaIndex's embedding-adapter engine against finetune_kit's adapters.

Same split as the embedding benchmark (`bench_embeddings.py`), same base model (the bundled
all-MiniLM-L6-v2), same adapters and epochs, one run each:

1. SQuAD-Shifts Reddit, split by paragraph (half / half, seed 0); 1,000 seeded training
   queries with the train-half corpus; every validation query against every validation
   paragraph (`bench_embeddings.make_data`).
2. LlamaIndex: `llama-index-finetuning==0.4.2`'s `EmbeddingAdapterFinetuneEngine` over
   `HuggingFaceEmbedding` (bundled MiniLM folder), as LlamaIndex's adapter notebook runs it:
   a linear adapter for 4 epochs, and `TwoLayerNN(384, 1024, 384, bias=True, add_residual=True)`
   for 25 epochs (`bench/li_adapter_finetune.py`, in the venv `bench/_venv_li`).
3. finetune_kit: `ftk finetune-adapter --train TRAIN --out DIR --adapter KIND --epochs N`, each
   run with a fresh embedding cache, so its wall time includes embedding every text.
4. Every adapter (ours and LlamaIndex's: our loader reads its folders) and the base model scored
   by `ftk eval-retrieval --data VAL [--adapter DIR] --json`.
5. `bench/results/adapter.json` (everything) and `bench/results/adapter.md` (the table).

Not run by CI (about 25 minutes on 2 CPU cores, nearly all of it LlamaIndex's 25-epoch run).

    python bench/bench_adapter.py                  # the full benchmark
    python bench/bench_adapter.py --reuse-li       # keep LlamaIndex's adapters and timings from the last run
"""
import argparse, json, os, shlex, shutil, subprocess, sys, time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embeddings import (BENCH, OFFLINE, METRICS, base_model_dir, cpu_info, ensure_venv, fmt, log,
                              make_data, run)

LI_EXTRA = 'llama-index-embeddings-huggingface==0.8.0'    # HuggingFaceEmbedding: the engine needs an embed model
RUNS = [('linear', 4), ('two-layer', 25)]                   # LlamaIndex's adapter notebook: linear 4 epochs, two-layer 25


def ensure_li_extra(py: Path, venv: Path):
    "Add HuggingFaceEmbedding to the LlamaIndex venv (once)."
    ready = venv / '.bench_adapter_ready'
    if ready.exists() and ready.read_text() == LI_EXTRA: return
    if run([py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', LI_EXTRA])[0].returncode:
        sys.exit(f"pip install {LI_EXTRA} failed in {venv}")
    ready.write_text(LI_EXTRA)


def run_llamaindex(py, train_p, base, out, kind, epochs, run_dir) -> dict:
    res_p = run_dir / f'li_{kind}_result.json'
    shutil.rmtree(out, ignore_errors=True); res_p.unlink(missing_ok=True)
    p, wall = run([py, BENCH / 'li_adapter_finetune.py', train_p, base, out, kind, epochs, res_p], timed=True,
                  cwd=run_dir, env={**os.environ, **OFFLINE})
    if p.returncode or not res_p.exists(): raise RuntimeError(f"LlamaIndex {kind} run failed (exit {p.returncode})")
    res = json.loads(res_p.read_text())
    res['script_wall_s'] = round(wall, 2)
    res_p.write_text(json.dumps(res, indent=1))
    log(f"LlamaIndex {kind}: finetune() {res['finetune_s']:.1f} s, whole script {wall:.1f} s")
    return res


def run_ours(ftk, train_p, out, kind, epochs) -> dict:
    shutil.rmtree(out, ignore_errors=True)          # a fresh embedding cache: embedding is part of the time
    p, wall = run(ftk + ['finetune-adapter', '--train', train_p, '--out', out, '--adapter', kind, '--epochs', epochs],
                  timed=True, env={**os.environ, **OFFLINE})
    if p.returncode: raise RuntimeError(f"ftk finetune-adapter ({kind}) failed (exit {p.returncode})")
    info = json.loads((out / 'finetune_kit.json').read_text())
    log(f"finetune_kit {kind}: whole command {wall:.1f} s (embedding {info['embed_s']} s, training {info['train_s']} s)")
    return {'command_wall_s': round(wall, 2), 'embed_s': info['embed_s'], 'train_s': info['train_s'],
            'steps': info['steps'], 'settings': {k: info[k] for k in ('epochs', 'batch_size', 'learning_rate', 'negatives', 'scale', 'transform')},
            'model_dir': str(out.resolve())}


def write_report(res: dict, results_dir: Path):
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / 'adapter.json').write_text(json.dumps(res, indent=1) + '\n')
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
    lines = [
        '# Adapter fine-tuning: LlamaIndex engine vs finetune_kit', '',
        f"SQuAD-Shifts Reddit, split by paragraph: {res['data']['n_train_queries']} training queries "
        f"({res['data']['n_train_corpus']} paragraphs); validation {res['data']['n_val_queries']} queries against "
        f"{res['data']['n_val_corpus']} paragraphs. Frozen base model all-MiniLM-L6-v2; adapters transform the query only. "
        f"CPU: {res['cpu']['model']}, {res['cpu']['usable_cpus']} cores.", '',
        '| model | hit@5 | MRR@10 | NDCG@10 | wall time (s) | faster |',
        '|---|---:|---:|---:|---:|---:|',
        *[f"| {name} | {fmt(g(m, 'hit@5'))}{d(m) if 'base' not in name else ''} | {fmt(g(m, 'mrr@10'))} | {fmt(g(m, 'ndcg@10'))} | "
          f"{fmt(t, pct=False) if t is not None else '-'} | {x or '-'} |" for name, m, t, x in rows], '',
        'Metrics in percent (hit@5 change from the base in brackets). Wall time: for LlamaIndex the engine\'s '
        '`finetune()` call, which embeds every pair of every batch of every epoch (model load and the engine\'s '
        'construction not counted); for finetune_kit the whole `ftk finetune-adapter` command, model load and '
        'embedding every training text once (fresh cache) included. All adapters scored by `ftk eval-retrieval --adapter DIR` '
        "(LlamaIndex's adapter folders load there unchanged).", '',
        f"Load average (1 min) at start {res['loadavg_start']:.2f}, at end {res['loadavg_end']:.2f}.", '',
        f"Produced by: `{res['command']}` ({res['finished_at']})",
    ]
    if res.get('errors'): lines += ['', '**Incomplete run:** ' + '; '.join(res['errors'])]
    if res.get('notes'): lines += ['', *[f"Note: {n}" for n in res['notes']]]
    (results_dir / 'adapter.md').write_text('\n'.join(lines) + '\n')
    log(f"wrote {results_dir / 'adapter.json'} and {results_dir / 'adapter.md'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=BENCH.parent / '../shared/data/squad_shifts/reddit_v1.0.json')
    ap.add_argument('--n-train', type=int, default=1000)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--run-dir', type=Path, default=BENCH / '_runs' / 'adapter')
    ap.add_argument('--results-dir', type=Path, default=BENCH / 'results')
    ap.add_argument('--venv', type=Path, default=BENCH / '_venv_li')
    ap.add_argument('--ftk', default='ftk', help="how to call the CLI (e.g. 'python -m finetune_kit.cli')")
    ap.add_argument('--reuse-li', action='store_true', help="reuse LlamaIndex's adapters and timings from the last run in --run-dir")
    args = ap.parse_args()

    run_dir = args.run_dir.resolve(); run_dir.mkdir(parents=True, exist_ok=True)
    ftk, base = shlex.split(args.ftk), base_model_dir()
    command = 'python ' + shlex.join([os.path.relpath(__file__)] + sys.argv[1:])
    res = dict(command=command, started_at=datetime.now(timezone.utc).isoformat(timespec='seconds'), seed=args.seed,
               runs=RUNS, data_file=str(args.data.resolve()), base_model=str(base), cpu=cpu_info(),
               loadavg_start=os.getloadavg()[0], scores={}, llamaindex={}, finetune_kit={}, errors=[], notes=[],
               versions={'main': {p: version(p) for p in ('finetune_kit', 'sentence-transformers', 'transformers', 'torch')}})

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
        if py is None: py = ensure_venv(args.venv); ensure_li_extra(py, args.venv)
        try: res['llamaindex'][kind] = run_llamaindex(py, train_p, base, out, kind, epochs, run_dir)
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
    for name, extra in models.items():
        log(f"evaluating {name}")
        try:
            p, wall = run(ftk + ['eval-retrieval', '--data', val_p, *extra, '--json'], timed=True, capture=True,
                          env={**os.environ, **OFFLINE})
            lines = [l for l in p.stdout.strip().splitlines() if l.strip()]
            if p.returncode or not lines: raise RuntimeError(f"exit {p.returncode}: {p.stderr[-500:]}")
            m = json.loads(lines[-1])
            res['scores'][name] = {**m, 'eval_wall_s': round(wall, 2)}
            log('  ' + ', '.join(f"{k}={m[k]:.4f}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in METRICS))
        except Exception as e: res['errors'].append(f"{name}: {e}"); log(f"ERROR: {e}")

    log('5/5 report')
    res['versions']['llamaindex_venv'] = next((r['versions'] for r in res['llamaindex'].values()), {})
    res.update(finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'), loadavg_end=os.getloadavg()[0])
    write_report(res, args.results_dir)
    print((args.results_dir / 'adapter.md').read_text())
    if res['errors']: sys.exit(f"finished with {len(res['errors'])} error(s): see above")


if __name__ == '__main__':
    main()
