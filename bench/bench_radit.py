"""Benchmark: RA-DIT against the base SmolLM2, a gold-only fine-tune and LlamaIndex's recipe (issue 13).

1. `data`: SQuAD-Shifts (`--data`, default Reddit) split by paragraph half / half (seed 0) before anything else
   (`_common.make_data`); `--n-train` (600) seeded training questions with their answers, against every
   training-half paragraph; `--n-val` (300) seeded validation questions, each against EVERY validation-half
   paragraph. The bundled MiniLM ranks each side's corpus once for all its questions (top 10, saved in RUN/).
2. `train-radit`, `train-gold`, `train-llamaindex`: the training chats of `radit.RECIPES` (RA-DIT: one example per
   each of the top k=3 passages; gold: the gold passage alone; llamaindex: LlamaIndex's recipe, the top-1 passage
   joined) and a LoRA fine-tune of the bundled SmolLM2-135M-Instruct on each (`llm_ft.finetune_llm`).
   `train-raft50`, `train-raft80`, `train-raft100`: RAFT (`radit_examples(oracle_frac=P)`): one example a question, the
   gold passage among 2 of the retriever's best non-gold passages in a fraction P of them, 3 non-gold in the rest.
3. `eval-MODEL-CONDITION` for MODEL in base, radit, gold, llamaindex and CONDITION in retrieved, gold,
   gold+distractors, none (k = 3): `radit.eval_rag`, greedy, 32 new tokens, the same questions for every row;
   the per-question table in RUN/eval/MODEL-CONDITION.jsonl. `eval-raditpar-CONDITION` and `eval-llamaindexpar-CONDITION`
   (CONDITION: retrieved or gold+distractors) score the same fine-tunes answering as RA-DIT does
   (`eval_rag(parallel=True)`: each passage asked alone, the answer most likely over all of them).
4. `report`: bench/results/radit.json and radit.md: EM and F1, training wall time, questions per second, and the
   issue's targets (RA-DIT vs base: +20 F1 with gold+distractors, +5 F1 with retrieved; RA-DIT above LlamaIndex's
   recipe with gold+distractors), for RA-DIT's training answered both ways.

Training settings: NOT tuned. The three fine-tunes use the library's defaults (`finetune_llm`: 3 epochs, learning
rate 2e-4, LoRA r=8 on every linear layer, 8 examples a step) and RA-DIT as the library defines it (no oracle
fraction: that is RAFT). To choose settings, `--dev 0.25` validates on a quarter of the TRAINING half's paragraphs
(split by paragraph; the validation half is not read), e.g. the RAFT fraction:

    python bench/bench_radit.py --dev 0.25 --n-train 150 --n-val 150 --run-dir bench/_runs/raft-dev --name raft_dev \
        --steps data,train-radit,train-raft80,train-raft100,eval-radit-retrieved,eval-radit-gold+distractors,...,report

Resumable by step: each step's result goes into RUN/state.json as it finishes, and a later call skips the steps
already done (`--redo` runs the named ones again), so a crash or a session end loses at most the step in progress
(a training step also resumes from its last checkpoint, every 50 optimizer steps). `--steps` names steps or
prefixes (`train`, `eval-radit`, `eval-base-gold`...). Not run by CI.

Cost on 2 cores at the default 3 epochs (2026-12-04): training RA-DIT's 1,800 chats took 3,421 s, LlamaIndex's
recipe 1,101 s and gold-only about 1,100 s (~387 tokens/s); each fine-tune's evaluation takes 0.5-2.5 min a
condition (short answers), the base model's 5-16 min (it writes until the token limit). RAFT 100% (2026-12-05): 581
chats (19 dropped as too long), 348,051 tokens an epoch, 2,207 s (474 tokens/s). On NYT (`--data
../shared/data/squad_shifts/nyt_v1.0.json`, 2026-12-05): RA-DIT 2,988 s, RAFT 100% 3,170 s, gold-only 1,086 s,
LlamaIndex's recipe 957 s; with LocalChat's token budget every evaluation, the base model's included, took
0.3-2.3 min a condition. With `--epochs 1`, about a third of the training. The RAFT dev run above (3 models): about 10 min a model.

    python bench/bench_radit.py                                    # everything, or whatever is left of it
    python bench/bench_radit.py --steps data,eval-base,report      # the base model only
    python bench/bench_radit.py --n-train 30 --n-val 20 --run-dir /tmp/radit --results-dir /tmp/radit/results  # a quick look
"""
import json, shutil, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BENCH, command_line, cpu_info, dataset_label, load_state, log, make_data, md_table, now, package_versions,
                     parser, problems, save_report, save_state)

MODELS = {'base': 'SmolLM2-135M-Instruct (base)', 'radit': 'RA-DIT (top-3, one example each)',
          'gold': 'gold passage only', 'llamaindex': "LlamaIndex's recipe (top-1 joined)",
          **{f'raft{p}': f'RAFT, gold passage in {p}% (among the top non-gold)' for p in (50, 80, 100)},
          'raditpar': "RA-DIT, answering each passage alone (RA-DIT's inference)",
          'llamaindexpar': "LlamaIndex's recipe, answering each passage alone"}
# MODELpar: MODEL's fine-tune answering with eval_rag(parallel=True): each passage asked alone, the answer most likely over all
PARALLEL = {'raditpar': 'radit', 'llamaindexpar': 'llamaindex'}
PAR_CONDITIONS = ('retrieved', 'gold+distractors')    # with one passage or none, asking each alone is asking once
# RAFT: one example a question, 3 passages: the gold one and 2 of the retriever's best non-gold in a fraction P, else 3 non-gold
RAFT = {f'raft{p}': dict(k=3, oracle_frac=p / 100) for p in (50, 80, 100)}
CONDITIONS = ('retrieved', 'gold', 'gold+distractors', 'none')      # as finetune_kit.radit.CONDITIONS (checked in main)
TRAINED = [m for m in MODELS if m != 'base' and m not in PARALLEL]
STEPS = (['data'] + [f'eval-base-{c}' for c in CONDITIONS] + [f'train-{m}' for m in TRAINED]
         + [f'eval-{m}-{c}' for m in TRAINED for c in CONDITIONS] + [f'eval-{m}-{c}' for m in PARALLEL for c in PAR_CONDITIONS] + ['report'])
CONFIG = ('data', 'dev', 'n_train', 'n_val', 'seed', 'k', 'epochs', 'lr')   # a run directory holds one configuration


# ---------------------------------------------------------------- steps
def step_data(a, run: Path, state: dict) -> dict:
    from finetune_kit.core import QADataset, sample_queries
    from finetune_kit.radit import retrieve
    train_p, val_p, info = make_data(a.data, run, a.n_train, a.seed, a.dev)
    val = sample_queries(QADataset.from_json(val_p), a.n_val, seed=a.seed)
    val.save_json(run / 'val_eval.json')
    train = QADataset.from_json(train_p)
    for name, ds in (('train', train), ('val', val)):
        (run / f'ranked_{name}.json').write_text(json.dumps(retrieve(ds, n=10)))
    hit = lambda ds, r: sum(r[q][0] in ds.relevant_docs[q] for q in r) / len(r)
    ranked_val = json.loads((run / 'ranked_val.json').read_text())
    log(f"{'dev' if a.dev else 'validation'}: {len(val.queries)} questions x {len(val.corpus)} paragraphs; retrieval hit@1 {hit(val, ranked_val):.3f}")
    return {**info, 'n_eval_queries': len(val.queries), 'val_hit@1': round(hit(val, ranked_val), 4),
            'train': str(train_p), 'val': str(run / 'val_eval.json'), 'file': str(Path(a.data).resolve())}


def data(run: Path, side: str):
    "The (dataset, ranked) of one side ('train' or 'val') as the data step saved them."
    from finetune_kit.core import QADataset
    return (QADataset.from_json(run / ('train.json' if side == 'train' else 'val_eval.json')),
            json.loads((run / f'ranked_{side}.json').read_text()))


def step_train(model: str, a, run: Path, state: dict) -> dict:
    from finetune_kit.chat_data import write_chat_jsonl
    from finetune_kit.llm_ft import finetune_llm
    from finetune_kit.radit import RECIPES, radit_examples
    train, ranked = data(run, 'train')
    ex = radit_examples(train, ranked, seed=a.seed, **(RECIPES | RAFT)[model])
    write_chat_jsonl(run / f'{model}.jsonl', ex)
    log(f"{model}: {len(ex)} training chats from {len(train.queries)} questions")
    info = finetune_llm(ex, run / model, epochs=a.epochs, learning_rate=a.lr, seed=a.seed, show_progress=False).run_info
    keys = ('model_dir', 'n_train', 'n_dropped_too_long', 'n_train_tokens', 'n_loss_tokens', 'steps', 'train_loss',
            'tokens_per_s', 'train_s', 'wall_s', 'peak_rss_mb', 'bf16', 'epochs', 'learning_rate', 'lora_r', 'batch_size')
    log(f"  {model}: {info['wall_s']:.0f} s, {info['tokens_per_s']:.0f} tokens/s, train loss {info['train_loss']:.3f}")
    return {k: info.get(k) for k in keys}


_llms = {}


def step_eval(model: str, cond: str, a, run: Path, state: dict) -> dict:
    from finetune_kit.llm import LocalChat
    from finetune_kit.radit import eval_rag
    trained = PARALLEL.get(model, model)
    if trained not in _llms: _llms.clear(); _llms[trained] = LocalChat() if model == 'base' else LocalChat(state['done'][f'train-{trained}']['model_dir'])
    val, ranked = data(run, 'val')
    res = eval_rag(_llms[trained], val, ranked, cond, k=a.k, seed=a.seed, parallel=model in PARALLEL)
    (run / 'eval').mkdir(exist_ok=True)
    res.table.to_json(run / 'eval' / f'{model}-{cond}.jsonl', orient='records', lines=True, force_ascii=False)
    m = res.metrics
    log(f"  {model} / {cond}: EM {100 * m['em']:.1f}, F1 {100 * m['f1']:.1f}, {m['questions_per_s']:.2f} questions/s")
    return {k: (float(v) if k in ('em', 'f1') else v) for k, v in m.items()}


# ---------------------------------------------------------------- report
def scores(state: dict) -> dict:
    "{model: {condition: metrics}} for the evaluations done."
    out = {}
    for step, m in state['done'].items():
        if step.startswith('eval-'):
            model, cond = step[5:].split('-', 1)
            out.setdefault(model, {})[cond] = m
    return out


def targets(s: dict) -> list:
    "The issue's targets, for RA-DIT and any RAFT model run: (what, value in F1 points, met) for those that can be computed."
    f1 = lambda m, c: 100 * s[m][c]['f1'] if c in s.get(m, {}) else None
    rows = [r for m, name in [('radit', 'RA-DIT')] + [('raditpar', "RA-DIT, its own inference")] * ('raditpar' in s) + [(m, f'RAFT {m[4:]}%') for m in RAFT if m in s]
            for r in [(f'{name} - base, gold+distractors (>= +20)', m, 'base', 'gold+distractors', 20),
                      (f'{name} - base, retrieved (>= +5)', m, 'base', 'retrieved', 5),
                      (f"{name} - LlamaIndex's recipe, gold+distractors (> 0)", m, 'llamaindex', 'gold+distractors', 0)]]
    if 'raditpar' in s:    # not the target: both fine-tunes answering the same way
        rows.append(("RA-DIT - LlamaIndex's recipe, both answering each passage alone, gold+distractors (> 0)", 'raditpar', 'llamaindexpar', 'gold+distractors', 0))
    out = []
    for what, m1, m2, c, need in rows:
        x, y = f1(m1, c), f1(m2, c)
        if x is not None and y is not None: out.append((what, x - y, x - y >= need if need else x - y > 0))
    return out


def render(state: dict) -> list:
    d, cfg, s, done = state['done']['data'], state['config'], scores(state), state['done']
    cell = lambda m, c: 'n/a' if c not in s.get(m, {}) else f"{100 * s[m][c]['em']:.1f} / **{100 * s[m][c]['f1']:.1f}**"
    rows = [[MODELS[m], *[cell(m, c) for c in CONDITIONS]] for m in MODELS if m in s]
    speed = [[MODELS[m], *[f"{s[m][c]['questions_per_s']:.2f}" if c in s[m] else 'n/a' for c in CONDITIONS]] for m in MODELS if m in s]
    train = [[MODELS[m], t['n_train'], f"{t['n_train_tokens']:,}", t['steps'], f"{t['train_loss']:.3f}", f"{t['tokens_per_s']:.0f}",
              f"{t['wall_s']:.0f}", 'n/a' if t['peak_rss_mb'] is None else f"{t['peak_rss_mb'] / 1024:.2f}"] for m in TRAINED if (t := done.get(f'train-{m}'))]
    tg = targets(s)
    return [
        '# RA-DIT: retrieval-augmented fine-tuning of the generator', '',
        f"{dataset_label(d['file'])}, split by paragraph half / half (seed {cfg['seed']}) before anything else"
        + (f"; this is a DEV run: the training half split again by paragraph, {cfg['dev']:g} of it for dev, the validation half unread. "
           if cfg.get('dev') else '. ') + f"Training: "
        f"{d['n_train_queries']} questions (retrieval over the {d['n_train_corpus']} training paragraphs). {'Dev' if cfg.get('dev') else 'Validation'}: "
        f"{d['n_eval_queries']} questions, each against all {d['n_val_corpus']} {'dev' if cfg.get('dev') else 'validation-half'} paragraphs (retrieval "
        f"hit@1 {100 * d['val_hit@1']:.1f}%, bundled all-MiniLM-L6-v2), the same questions in every cell. k = {cfg['k']}. "
        f"Generator: SmolLM2-135M-Instruct, LoRA r=8, {cfg['epochs']:g} epoch(s), learning rate {cfg['lr']:g} ("
        + ("the library's defaults" if (cfg['epochs'], cfg['lr']) == (3, 2e-4) else 'given on the command line')
        + f", not tuned), greedy answers of up to 32 tokens. CPU: {state['cpu']['model']}, {state['cpu']['usable_cpus']} cores.", '',
        '## EM / F1 (%)', '', *md_table(['model', *CONDITIONS], rows), '',
        '*retrieved*: the top 3 passages; *gold*: the gold passage alone; *gold+distractors*: the gold passage among the 2 '
        "best non-gold passages, at a seeded position; *none*: closed book. SQuAD v1.1's normalisation and scoring. "
        "Every row but those 'answering each passage alone' shows the model the passages together in one prompt; those ask "
        "each passage alone and keep the answer most likely over all of them (`eval_rag(parallel=True)`, RA-DIT's "
        "inference), the same fine-tune as the row named without it.", '',
        '## Targets (F1 points)', '', *md_table(['target', 'difference', 'met'], [[w, f"{x:+.1f}", 'yes' if ok else '**no**'] for w, x, ok in tg]), '',
        '## Training', '', *md_table(['model', 'chats', 'tokens', 'steps', 'train loss', 'tokens/s', 'wall s', 'peak GB'], train), '',
        'wall s: the whole `finetune_llm` call (model load, training, merging the adapter). tokens: non-padding tokens of '
        'one epoch.', '',
        '## Questions per second (eval_rag with LocalChat\'s defaults when each row ran: bf16 where the CPU has it, up to 16 rows a batch; since 2026-12-04 also cut at 6,144 padded tokens on a CPU)', '', *md_table(['model', *CONDITIONS], speed), '',
        'Produced by: ' + '; then '.join(f"`{c}`" for c in state['commands']) + f" ({state.get('finished_at', '?')}).",
        *problems(state)]


# ---------------------------------------------------------------- driver
def chosen(spec: str) -> list:
    "The steps `spec` names (comma-separated names or prefixes such as 'train' or 'eval-radit'), in run order."
    if spec == 'all': return list(STEPS)
    words = [w.strip() for w in spec.split(',') if w.strip()]
    if bad := [w for w in words if not any(s == w or s.startswith(w + '-') for s in STEPS)]:
        sys.exit(f"unknown steps {bad}; steps are {', '.join(STEPS)} (or a prefix: train, eval, eval-MODEL)")
    return [s for s in STEPS if any(s == w or s.startswith(w + '-') for w in words)]


def needs(step: str) -> str | None:
    "The step whose result `step` uses: nothing for the data, a model's training for its evaluations, else the data."
    model = PARALLEL.get(m := step.split('-')[1], m) if step.startswith('eval-') else 'base'
    return None if step == 'data' else 'data' if model == 'base' else f'train-{model}'


def run_step(step: str, a, run: Path, state: dict):
    if step == 'data': return step_data(a, run, state)
    if step.startswith('train-'): return step_train(step[6:], a, run, state)
    if step.startswith('eval-'): return step_eval(*step[5:].split('-', 1), a, run, state)
    state['finished_at'] = now()
    print(save_report(state, a.results_dir, a.name, render))
    return {'at': state['finished_at']}


def forget(state: dict, step: str, run: Path):
    "Drop `step`'s result and whatever was made from it (new data: everything; a new model: its evaluations)."
    done = state['done']
    if step == 'data': done.clear()
    if step.startswith('train-'):
        m = step[6:]
        for k in [k for k in done if k.startswith('eval-') and PARALLEL.get(e := k.split('-')[1], e) == m]: del done[k]
        shutil.rmtree(run / m, ignore_errors=True)         # no resuming an old checkpoint
    done.pop(step, None)


def main():
    from finetune_kit.radit import CONDITIONS as LIB
    assert tuple(LIB) == CONDITIONS, LIB
    ap = parser(__doc__, 'reddit_v1.0.json')
    ap.add_argument('--n-train', type=int, default=600, help='training questions (seeded sample of the training half)')
    ap.add_argument('--n-val', type=int, default=300, help='validation questions (seeded sample of the validation half)')
    ap.add_argument('--dev', type=float, default=None, help='choose settings: validate on this share of the TRAINING half (split by paragraph), never on the validation half')
    ap.add_argument('--k', type=int, default=3, help='passages per question when evaluating')
    ap.add_argument('--epochs', type=float, default=3, help="fine-tuning epochs (finetune_llm's default)")
    ap.add_argument('--lr', type=float, default=2e-4, help="learning rate (finetune_llm's default)")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--steps', default='all', help=f"comma-separated steps or prefixes, of: {', '.join(STEPS)}")
    ap.add_argument('--redo', action='store_true', help='run the chosen steps again even if state.json has them')
    ap.add_argument('--run-dir', type=Path, default=BENCH / '_runs' / 'radit')
    ap.add_argument('--results-dir', type=Path, default=BENCH / 'results')
    ap.add_argument('--name', default='radit', help='results file name (RESULTS/NAME.json, NAME.md)')
    a = ap.parse_args()
    a.data = a.data.resolve()
    steps = chosen(a.steps)
    run = a.run_dir.resolve(); run.mkdir(parents=True, exist_ok=True)
    state = load_state(run)
    config = {k: str(getattr(a, k)) if k == 'data' else getattr(a, k) for k in CONFIG}
    if state.get('config', config) != config and not (a.redo and 'data' in steps):
        sys.exit(f"{run} holds a run with {state['config']}, not {config}: use another --run-dir, or --redo with the data step")
    state.setdefault('done', {})
    if a.redo:
        for s in steps: forget(state, s, run)
    if 'data' not in state['done']: state['commands'] = []
    state['commands'] = state.get('commands', []) + [command_line(__file__, BENCH.parent)]
    state.update(config=config, cpu=cpu_info(), versions=package_versions(('finetune_kit', 'trl', 'peft', 'transformers', 'torch')),
                 errors=[], started_at=state.get('started_at', now()))
    for step in steps:
        if step in state['done'] and step != 'report': log(f"{step}: done earlier, kept"); continue
        if (need := needs(step)) and need not in state['done']:
            state['errors'].append(f"{step}: needs {need} first"); log(f"skipping {step}: needs {need}"); continue
        log(f"step {step}")
        try: state['done'][step] = run_step(step, a, run, state)
        except Exception as e:
            state['errors'].append(f"{step}: {type(e).__name__}: {e}"); log(f"ERROR in {step}: {e}"); save_state(run, state); raise
        save_state(run, state)


if __name__ == '__main__':
    main()
