"""Benchmark: what a fine-tuned cross-encoder reranker adds to base and to fine-tuned retrieval.

On the embedding benchmark's data (the same code, `_common.make_data`):

1. SQuAD-Shifts Reddit split by paragraph (half / half, seed 0); 1,000 seeded training queries
   with the train-half corpus. Validation: a seeded sample of `--n-val` validation queries
   (default 1,000; 0 = all ~4,900) against EVERY validation paragraph, the same for every row.
2. The fine-tuned retriever: `--retriever-ft DIR`, else `bench/_runs/embeddings/model_finetune_kit`
   when the embedding benchmark trained one on the same training file, else
   `ftk finetune-embeddings --train TRAIN --out RUN/retriever_ft --epochs 2`.
3. The reranker: `ftk finetune-reranker --train TRAIN --out RUN/reranker --negatives N --epochs E`
   (the bundled MiniLM with a new head; hard negatives mined with the base MiniLM retriever).
4. The retriever weight (how much the retriever's similarity counts beside the reranker's score):
   `tune_retriever_weight` on `--n-dev` (300) questions of the TRAINING half that trained neither
   model (seed 1), for both retrievers; the weight with the best mean MRR@10 over the two is used.
   The validation questions play no part in choosing it.
5. `ftk eval-retrieval --data VAL --model M --json`, and the same with
   `--reranker RUN/reranker --rerank-top-k K --retriever-weight W`, W = 0 (the reranker alone) and the
   chosen weight (fused), for M = base MiniLM and the fine-tuned retriever.
   Throughput: the pairs the reranked command scored, over the seconds it spent scoring them
   (printed by the command on stderr).
6. `bench/results/rerank.json` (everything) and `bench/results/rerank.md` (the table).

Every step saves its result in RUN/state.json and a later call reuses it, so the steps can run
as separate commands (`--steps data,retriever`, then `--steps reranker`, then `--steps calibrate,eval,report`).
Not run by CI.

    python bench/bench_rerank.py                         # everything
    python bench/bench_rerank.py --steps calibrate,eval,report --rescore    # re-score with the saved models
"""
import json, re, shlex, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BENCH, METRICS, add_dirs, base_model_dir, command_line, cpu_info, dataset_label, fmt, ftk_json,
                     ftk_train, load_state, log, log_metrics, make_data, md_table, now, package_versions, parser, problems, save_report,
                     save_state)

STEPS = ['data', 'retriever', 'reranker', 'calibrate', 'eval', 'report']


# ---------------------------------------------------------------- 1. data
def step_data(args, run_dir: Path, state: dict):
    from finetune_kit.core import QADataset, sample_queries
    train_p, val_p, info = make_data(args.data, run_dir, args.n_train, args.seed)
    val = QADataset.from_json(val_p)
    sub = sample_queries(val, args.n_val, seed=args.seed) if args.n_val else val
    sub_p = run_dir / f"val_{len(sub.queries)}.json"
    sub.save_json(sub_p)
    log(f"validation: {len(sub.queries)} of {len(val.queries)} queries (seed {args.seed}) x {len(sub.corpus)} paragraphs -> {sub_p.name}")
    state['data'] = {**info, 'train': str(train_p), 'val_full': str(val_p), 'val': str(sub_p),
                     'n_eval_queries': len(sub.queries), 'seed': args.seed, 'file': str(args.data.resolve())}


# ---------------------------------------------------------------- 2. fine-tuned retriever
def step_retriever(args, ftk, run_dir: Path, state: dict):
    train_p = Path(state['data']['train'])
    emb_run = BENCH / '_runs' / 'embeddings'
    if args.retriever_ft:
        state['retriever_ft'] = {'model_dir': str(Path(args.retriever_ft).resolve()), 'source': 'given (--retriever-ft)'}
    elif (emb_run / 'model_finetune_kit' / 'finetune_kit.json').exists() and (emb_run / 'train.json').exists() \
            and (emb_run / 'train.json').read_bytes() == train_p.read_bytes():
        state['retriever_ft'] = {'model_dir': str((emb_run / 'model_finetune_kit').resolve()),
                                 'source': 'the embedding benchmark (same training file)'}
    else:
        out = run_dir / 'retriever_ft'
        wall = ftk_train(ftk, ['finetune-embeddings', '--train', train_p, '--out', out, '--epochs', args.retriever_epochs], out)
        state['retriever_ft'] = {'model_dir': str(out.resolve()), 'source': 'trained here', 'command_wall_s': round(wall, 1),
                                 'epochs': args.retriever_epochs}
    log(f"fine-tuned retriever: {state['retriever_ft']}")


# ---------------------------------------------------------------- 3. reranker
def step_reranker(args, ftk, run_dir: Path, state: dict):
    out = run_dir / 'reranker'
    cmd = ['finetune-reranker', '--train', state['data']['train'], '--out', out, '--negatives', args.negatives,
                 '--epochs', args.epochs, '--max-length', args.max_length]
    ft = state['retriever_ft']['model_dir']
    if args.mine_with == 'fine-tuned': cmd += ['--retriever', ft]          # hard negatives: the fine-tuned retriever's mistakes
    if args.backbone == 'fine-tuned': cmd += ['--model', ft]               # start from the fine-tuned retriever's weights
    wall = ftk_train(ftk, cmd, out)
    info = json.loads((out / 'finetune_kit.json').read_text())
    state['reranker'] = {'model_dir': str(out.resolve()), 'command_wall_s': round(wall, 1), 'negatives': args.negatives,
                         'mine_with': args.mine_with, 'backbone': args.backbone,
                         'epochs': args.epochs, 'max_length': args.max_length, 'info': info, 'command': shlex.join(map(str, ftk + cmd))}


# ---------------------------------------------------------------- 4. retriever weight, on held-out training questions
def step_calibrate(args, run_dir: Path, state: dict):
    from finetune_kit.core import QADataset, load_squad, split_by_doc, sample_queries, subset
    from finetune_kit.rerank import Reranker, tune_retriever_weight
    train = QADataset.from_json(state['data']['train'])
    train_half, _ = split_by_doc(load_squad(args.data), val_frac=0.5, seed=args.seed)     # as make_data splits it
    unused = subset(train_half, [q for q in train_half.queries if q not in train.queries])
    dev = sample_queries(unused, args.n_dev, seed=args.seed + 1)
    rr = Reranker(state['reranker']['model_dir'], top_k=args.top_k)
    models = {'base': str(base_model_dir()), 'fine-tuned': state['retriever_ft']['model_dir']}
    tables = {}
    for name, model in models.items():
        t = tune_retriever_weight(dev, rr, model, weights=WEIGHTS, top_k=args.top_k)
        tables[name] = {str(w): round(float(t.loc[w, 'mrr@10']), 4) for w in t.index}
        log(f"  {name}: MRR@10 by retriever weight on {len(dev.queries)} dev questions: {tables[name]}")
    mean = {w: sum(tables[n][str(w)] for n in models) / len(models) for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: mean[w])
    state['calibration'] = {'n_dev_queries': len(dev.queries), 'dev_corpus': len(dev.corpus), 'mrr@10': tables, 'weight': best}
    log(f"retriever weight: {best}")


# ---------------------------------------------------------------- 5. evaluation
WEIGHTS = (0, 0.25, 0.5, 0.75, 1, 1.5, 2)


def evaluate(ftk, val_p, model, reranker=None, top_k=20, weight=None) -> dict:
    cmd = ['eval-retrieval', '--data', val_p, '--model', model]
    if reranker: cmd += ['--reranker', reranker, '--rerank-top-k', top_k, '--retriever-weight', weight]
    m, wall, stderr = ftk_json(ftk, cmd, METRICS)
    res = {**m, 'eval_wall_s': round(wall, 1)}
    if reranker:   # "reranked N pairs in S s (R pairs/s)" on stderr
        t = re.search(r"reranked (\d+) pairs in ([\d.]+) s", stderr)
        if t: res.update(rerank_pairs=int(t.group(1)), rerank_s=float(t.group(2)), pairs_per_s=round(int(t.group(1)) / float(t.group(2)), 1))
    log_metrics(res, res)
    return res


def step_eval(args, ftk, run_dir: Path, state: dict):
    val_p, rr = state['data']['val'], state['reranker']['model_dir']
    models = {'base': str(base_model_dir()), 'fine-tuned': state['retriever_ft']['model_dir']}
    if args.rescore: state['scores'] = {}
    scores, w = state.setdefault('scores', {}), state['calibration']['weight']
    for name, model in models.items():
        for key, weight in ((name, None), (name + ' + reranker alone', 0), (name + ' + reranker fused', w)):
            if key in scores and not args.rescore: log(f"{key}: kept from an earlier run"); continue
            log(f"evaluating {key}")
            scores[key] = evaluate(ftk, val_p, model, rr if weight is not None else None, args.top_k, weight)
            save_state(run_dir, state)


# ---------------------------------------------------------------- 6. report
def render(state: dict) -> list:
    "The report's markdown lines."
    s, d, rr = state.get('scores', {}), state['data'], state['reranker']
    k = state['args']['top_k']
    cal = state.get('calibration', {})
    rows = []
    for name, label in (('base', 'base MiniLM'), ('fine-tuned', 'fine-tuned MiniLM (ftk finetune-embeddings, 2 epochs)')):
        a = s.get(name)
        for kind, how in (('alone', 'reranker alone (weight 0)'), ('fused', f"reranker fused (weight {cal.get('weight', '?')})")):
            b = s.get(f"{name} + reranker {kind}")
            delta = 'n/a' if not (a and b) else f"{100 * (b['mrr@10'] - a['mrr@10']):+.1f}"
            rows.append([label, how, fmt(a and a['hit@1']), fmt(a and a['mrr@10']), fmt(b and b['hit@1']),
                         fmt(b and b['mrr@10']), f"**{delta}**", (b or {}).get('pairs_per_s', 'n/a')])
    tune = ''
    if cal:
        tune = (f"The retriever weight ({cal['weight']}) was chosen on {cal['n_dev_queries']} questions of the *training* half that "
                f"trained neither model (against its {cal['dev_corpus']} paragraphs), as the best mean MRR@10 over the two "
                f"retrievers; the validation questions played no part. MRR@10 there by weight: "
                + '; '.join(f"{n}: " + ', '.join(f"{w} → {fmt(v)}" for w, v in t.items()) for n, t in cal['mrr@10'].items()) + '.')
    sub = d['n_eval_queries'] < d['n_val_queries']
    return [
        '# Cross-encoder reranking: what a fine-tuned reranker adds', '',
        f"{dataset_label(d['file'])}, split by paragraph (seed {d['seed']}). Reranker trained on {d['n_train_queries']} training "
        f"queries ({d['n_train_corpus']} paragraphs), {rr['negatives']} hard negatives each (mined with "
        f"{rr.get('mine_with', 'base')} MiniLM) plus one random, {rr['epochs']} epoch(s), {rr.get('max_length', 256)} tokens, from "
        + ('the fine-tuned retriever' if rr.get('backbone') == 'fine-tuned' else 'the bundled all-MiniLM-L6-v2')
        + " backbone with a new scoring head. "
        + (f"**Evaluated on a seeded sample of {d['n_eval_queries']} of the {d['n_val_queries']} validation queries** "
           f"(the same sample for every row, to keep the benchmark within its CPU budget), " if sub else
           f"Evaluated on all {d['n_eval_queries']} validation queries, ")
        + f"each against all {d['n_val_corpus']} validation paragraphs; the reranker reorders each retriever's top {k}. "
        f"CPU: {state['cpu']['model']}, {state['cpu']['usable_cpus']} cores.", '',
        *md_table(['retriever', f"order of its top {k}", 'hit@1', 'MRR@10', 'hit@1 reranked', 'MRR@10 reranked', 'Δ MRR@10',
                   'reranking pairs/s'], rows, left=2), '',
        'Metrics in percent. *Reranker alone*: the top candidates ordered by the cross-encoder\'s score; *fused*: by the '
        "cross-encoder's score plus the retriever's similarity times the weight, both z-normalised over the candidates "
        "(`ftk eval-retrieval --retriever-weight`, default 1). " + tune, '',
        'Reranking throughput: (query, passage) pairs scored per second by the reranked '
        f"`ftk eval-retrieval` command (bf16 autocast where the CPU has it, batches of 32, max {rr.get('max_length', 256)} tokens), "
        'model loading and retrieval excluded.', '',
        f"Training wall time: reranker {rr['command_wall_s']:.0f} s for {rr['info']['pairs']} pairs "
        f"({rr['info']['steps']} steps; the whole `ftk finetune-reranker` command, mining and model load included)"
        + (f"; fine-tuned retriever {state['retriever_ft']['command_wall_s']:.0f} s (`ftk finetune-embeddings`, "
           f"{state['retriever_ft']['epochs']} epochs)" if 'command_wall_s' in state['retriever_ft'] else
           f"; fine-tuned retriever: {state['retriever_ft']['source']}") + '.', '',
        "Produced by: " + '; then '.join(f"`{c}`" for c in state['commands']) + f" ({state.get('finished_at', '?')}). "
        f"The reranker: `{rr['command']}`.", *problems(state),
    ]


def main():
    ap = parser(__doc__)
    ap.add_argument('--n-train', type=int, default=1000)
    ap.add_argument('--n-val', type=int, default=1000, help='validation queries to score (seeded sample; 0 = all)')
    ap.add_argument('--negatives', type=int, default=3, help='hard negatives per question (plus one random)')
    ap.add_argument('--epochs', type=int, default=2, help='reranker epochs')
    ap.add_argument('--mine-with', choices=['base', 'fine-tuned'], default='base', help='the retriever that mines hard negatives')
    ap.add_argument('--backbone', choices=['minilm', 'fine-tuned'], default='minilm', help='what the reranker starts from')
    ap.add_argument('--max-length', type=int, default=256, help='reranker tokens of question + passage')
    ap.add_argument('--retriever-epochs', type=int, default=2)
    ap.add_argument('--top-k', type=int, default=20, help='candidates the reranker reorders')
    ap.add_argument('--n-dev', type=int, default=300, help='held-out training-half questions that choose the retriever weight')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--retriever-ft', default=None, help='a fine-tuned retriever folder to use instead of training one')
    ap.add_argument('--steps', default=','.join(STEPS), help=f"comma-separated subset of {STEPS}")
    ap.add_argument('--rescore', action='store_true', help='re-run evaluations that state.json already holds')
    add_dirs(ap, BENCH / '_runs' / 'rerank')
    args = ap.parse_args()
    steps = [s.strip() for s in args.steps.split(',') if s.strip()]
    if bad := set(steps) - set(STEPS): sys.exit(f"unknown steps {sorted(bad)}; choose from {STEPS}")

    run_dir = args.run_dir.resolve(); run_dir.mkdir(parents=True, exist_ok=True)
    ftk = shlex.split(args.ftk)
    state = load_state(run_dir)
    if 'data' in steps or 'reranker' in steps:      # new data or a new model: old scores and weight are stale
        state.pop('scores', None); state.pop('calibration', None)
    if 'retriever' in steps and 'scores' in state:      # a new fine-tuned retriever: its rows are stale
        state['scores'] = {k: v for k, v in state['scores'].items() if not k.startswith('fine-tuned')}
    command = command_line(__file__, BENCH.parent)
    if 'data' in steps: state['commands'] = []
    state.setdefault('commands', []).append(command)
    state.update(args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, cpu=cpu_info(), errors=[],
                 versions=package_versions())
    for step in steps:
        log(f"step {step}")
        try:
            if step == 'data': step_data(args, run_dir, state)
            elif step == 'retriever': step_retriever(args, ftk, run_dir, state)
            elif step == 'reranker': step_reranker(args, ftk, run_dir, state)
            elif step == 'calibrate': step_calibrate(args, run_dir, state)
            elif step == 'eval': step_eval(args, ftk, run_dir, state)
            elif step == 'report':
                state['finished_at'] = now()
                print(save_report(state, args.results_dir, 'rerank', render))
        except Exception as e:
            state['errors'].append(f"{step}: {e}"); log(f"ERROR in {step}: {e}"); save_state(run_dir, state); sys.exit(1)
        save_state(run_dir, state)


if __name__ == '__main__':
    main()
