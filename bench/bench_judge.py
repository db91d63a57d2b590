"""Judges against people's labels: TruthfulQA correctness (split by question) and HHH pairwise
(split by prompt). For each data set: the lexical rule (the floor), the base SmolLM2 writing a
verdict (LLMJudge) and read by its next-token probabilities (TokenProbJudge), and two students
trained on the training split with the library's defaults: the cross-encoder and SmolLM2 + LoRA.
A correctness student's threshold is tuned on a dev split carved (by question) from the
training rows; every judge is scored on the same test rows. Each judge's result is saved as it
finishes (results/judge.json), so a rerun skips what is done.

    python bench/bench_judge.py [--work /tmp/bench_judge] [--only truthfulqa|hhh] [--fresh]
    python bench/bench_judge.py --redo "SmolLM2, token probabilities" ...   # judge again (and retrain) the named rows, in place
    python bench/bench_judge.py --speed [--n-speed 200]   # after the above: every judge on the same rows, back to back
    python bench/bench_judge.py --depths 3 2 1 [--n-speed 200]   # what `--layers` trades: cross-encoder students of each depth
    python bench/bench_judge.py --arithmetic [--n-speed 200]       # the LLM judge's arithmetic a judgment, as a multiple of each depth's

`--speed` times the judges again in one process on the first N test rows of each data set (the
students from --work; the LoRA student where its folder is still there), the cross-encoder first and last so a change of load shows (and again at 64 pairs a batch, the default before
`CE_CPU_BATCH`), and writes
the cross-encoder's speed as a multiple of each LLM judge's (results/judge_speed.{json,md}).
"""
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH

JUDGE_DATA = BENCH.parent/'../shared/data/judge'
COLS = ['n', 'agreement', 'kappa', 'kappa_ci', 'invalid_rate', 'position_consistency', 'judgments_per_s', 'tokens_per_judgment', 'train_s']

def datasets():
    from finetune_kit.judge import truthfulqa_rows, hhh_rows, split_rows
    train, test = split_rows(truthfulqa_rows(JUDGE_DATA/'truthful_qa_questions.json'), test_frac=0.4, seed=0)
    fit, dev = split_rows(train, test_frac=0.2, seed=1)
    htrain, htest = split_rows(hhh_rows(sorted(JUDGE_DATA.glob('hhh_*.json'))), test_frac=0.4, seed=0)
    return {'truthfulqa': ('correctness', fit, dev, test), 'hhh': ('pairwise', htrain, None, htest)}

def dev_sets():
    "The dev splits defaults are chosen on: {name: (kind, fit rows, dev rows)}; TruthfulQA's as above, HHH's carved by prompt from its training rows."
    from finetune_kit.judge import split_rows
    ds = datasets()
    (tq_kind, fit, dev, _), (h_kind, htrain, _, _) = ds['truthfulqa'], ds['hhh']
    return {'truthfulqa': (tq_kind, fit, dev), 'hhh': (h_kind, *split_rows(htrain, test_frac=0.25, seed=1))}

def judges(kind, fit, dev, work: Path):
    "(name, a function building the judge, returning (judge, train seconds))."
    from finetune_kit.judge import LexicalJudge, LLMJudge, TokenProbJudge, finetune_judge
    def student(s):
        def build():
            t = time.perf_counter(); j = finetune_judge(fit, work/f'{kind}-{s}', student=s, dev=dev, show_progress=False)
            return j, round(time.perf_counter() - t, 1)
        return build
    return [('lexical rule', lambda: (LexicalJudge(kind), 0)), ('SmolLM2, written verdict', lambda: (LLMJudge('local', kind), 0)),
            ('SmolLM2, token probabilities', lambda: (TokenProbJudge('local', kind), 0)),
            ('cross-encoder student', student('cross-encoder')), ('SmolLM2 + LoRA student', student('local'))]

def report(res: dict) -> str:
    md = []
    for ds, rows in res.items():
        md += [f"**{ds}** ({rows[0]['kind']}, {rows[0]['n']} test rows, {rows[0]['n_train']} training rows)", '',
               '| judge | ' + ' | '.join(COLS[1:]) + ' |', '|---' * len(COLS) + '|']
        md += ['| ' + r['judge'] + ' | ' + ' | '.join(str(r.get(c, '')) for c in COLS[1:]) + ' |' for r in rows] + ['']
    return '\n'.join(md)

def timed(judge, rows) -> float:
    judge.judge(rows[:4])                                       # warm-up: load the model
    t = time.perf_counter(); judge.judge(rows); return round(len(rows) / (time.perf_counter() - t), 2)

def speed(n: int, work: Path):
    from finetune_kit.judge import LLMJudge, TokenProbJudge, load_judge
    res, md = {}, ['Judgments per second on the same test rows, one process, back to back', '',
                   '| data | rows | judge | judgments/s | cross-encoder is x times faster |', '|---|---|---|---|---|']
    for ds, (kind, fit, dev, test) in datasets().items():
        rows, ce, ce64 = test[:n], load_judge(work/f'{kind}-cross-encoder'), load_judge(work/f'{kind}-cross-encoder')
        ce64.reranker.batch_size = 64                            # the default before CE_CPU_BATCH, timed beside it
        llms = {'SmolLM2, written verdict': LLMJudge('local', kind), 'SmolLM2, token probabilities': TokenProbJudge('local', kind)}
        if (work/f'{kind}-local').is_dir(): llms['SmolLM2 + LoRA student'] = load_judge(work/f'{kind}-local')   # the same network, merged: the base's speed
        r = ({'cross-encoder (first)': timed(ce, rows), 'cross-encoder, 64 a batch (first)': timed(ce64, rows)} | {k: timed(j, rows) for k, j in llms.items()}
             | {'cross-encoder (last)': timed(ce, rows), 'cross-encoder, 64 a batch (last)': timed(ce64, rows)})
        ce_s = min(r['cross-encoder (first)'], r['cross-encoder (last)'])
        ce64_s = min(r['cross-encoder, 64 a batch (first)'], r['cross-encoder, 64 a batch (last)'])
        res[ds] = {'rows': len(rows), 'judgments_per_s': r, 'ce_times': {k: round(ce_s / r[k], 1) for k in llms},
                   'ce_64_a_batch_times': {k: round(ce64_s / r[k], 1) for k in llms}, 'cpu_batch_over_64': round(ce_s / ce64_s, 2)}
        md += [f"| {ds} | {len(rows)} | {k} | {v} | {res[ds]['ce_times'].get(k, '')} ({res[ds]['ce_64_a_batch_times'][k]} at 64 a batch) |"
               if k in llms else f"| {ds} | {len(rows)} | {k} | {v} | |" for k, v in r.items()]
        print(ds, res[ds], flush=True)
    out = BENCH/'results'
    (out/'judge_speed.json').write_text(json.dumps(res, indent=1)); (out/'judge_speed.md').write_text('\n'.join(md) + '\n'); print('\n'.join(md))

def depths(layers: list[int], n: int, work: Path):
    """Cross-encoder students of each depth (trained as the default one is: fit rows, threshold on dev) against SmolLM2 read
    by token probabilities, timed in one process on the first `n` test rows (each student before and after the LLM, the slower
    used, with its weights as trained and cast to bf16); kappa on every test row, for information: the default depth was chosen
    on dev splits (bench_judge_layers.py). Results in results/judge_depths.{json,md}."""
    import torch
    from finetune_kit.judge import finetune_judge, evaluate_judge, load_judge, TokenProbJudge
    from _common import cpu_info
    def bf16(d):
        j = load_judge(d); j.reranker.model.to(torch.bfloat16); j.reranker.bf16 = False; return j
    res, md = {'cpu': cpu_info(), 'rows_timed': n}, ['| data | student | x token probabilities | bf16 weights: x | test kappa [95%] |', '|---|---|---:|---:|---|']
    for ds, (kind, fit, dev, test) in datasets().items():
        dirs = {k: work/f'{kind}-ce{k}' for k in layers}
        for k, d in dirs.items():
            if not d.is_dir(): finetune_judge(fit, d, student='cross-encoder', kind=kind, dev=dev, layers=k, show_progress=False)
        kappa = {k: evaluate_judge(load_judge(d), test).metrics for k, d in dirs.items()}
        ces = {(k, w): (load_judge(d) if w == 'as trained' else bf16(d)) for k, d in dirs.items() for w in ('as trained', 'bf16')}
        rows = test[:n]
        first = {c: timed(j, rows) for c, j in ces.items()}
        tp = timed(TokenProbJudge('local', kind), rows)
        last = {c: timed(j, rows) for c, j in ces.items()}
        x = {c: round(min(first[c], last[c]) / tp, 1) for c in ces}
        res[ds] = {'token_probabilities_per_s': tp, 'students': {k: {'kappa': round(kappa[k]['kappa'], 3), 'kappa_ci': kappa[k]['kappa_ci'],
                   'per_s': {w: (first[k, w], last[k, w]) for w in ('as trained', 'bf16')}, 'x': {w: x[k, w] for w in ('as trained', 'bf16')}} for k in layers}}
        md += [f"| {ds} | {k} layer{'s' if k > 1 else ''} | {x[k, 'as trained']} | {x[k, 'bf16']} | {kappa[k]['kappa']:.2f} {kappa[k]['kappa_ci']} |" for k in layers]
        print(ds, json.dumps(res[ds]), flush=True)
    out = BENCH/'results'
    (out/'judge_depths.json').write_text(json.dumps(res, indent=1)); (out/'judge_depths.md').write_text('\n'.join(md) + '\n'); print('\n'.join(md))

def arithmetic(n: int, layers=(1, 2, 3)):
    """FLOPs a judgment (2 a multiply-add, in matrix products and attention), SmolLM2 read by token probabilities
    (a pairwise row asked in both orders; LM head at the last position only) against cross-encoder students of each
    depth (each answer once, truncated as the student truncates), on the first `n` test rows: the most speed a runtime
    could give a student, were it as efficient as the LLM. Results in results/judge_arithmetic.json."""
    from transformers import AutoConfig, AutoTokenizer
    from finetune_kit.judge import judge_messages, ce_query, prompt_tokens, swap
    from finetune_kit.models import minilm_path, smollm2_path
    g = smollm2_path(); lc = AutoConfig.from_pretrained(g.parent, gguf_file=g.name); lt = AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name)
    sc = AutoConfig.from_pretrained(minilm_path()); st = AutoTokenizer.from_pretrained(minilm_path())
    d, kv = lc.hidden_size, lc.hidden_size // lc.num_attention_heads * lc.num_key_value_heads
    per_tok = 2 * (2 * d * d + 2 * d * kv + 3 * d * lc.intermediate_size)
    llm = lambda t: lc.num_hidden_layers * (t * per_tok + 4 * t * t * d) + 2 * d * lc.vocab_size
    ce = lambda t, k: k * (2 * t * (4 * sc.hidden_size ** 2 + 2 * sc.hidden_size * sc.intermediate_size) + 4 * t * t * sc.hidden_size)
    max_len = 256                                               # what CrossEncoderJudge's reranker truncates to
    res = {}
    for ds, (kind, fit, dev, test) in datasets().items():
        rows = test[:n]
        asked = [[r] if kind == 'correctness' else [r, swap(r)] for r in rows]
        lt_n = [[prompt_tokens(lt, judge_messages(x, kind)) for x in a] for a in asked]
        fields = ['answer'] if kind == 'correctness' else ['answer_a', 'answer_b']
        st_n = [[len(st(ce_query(r), r[f], truncation=True, max_length=max_len)['input_ids']) for f in fields] for r in rows]
        llm_ops = sum(llm(t) for ts in lt_n for t in ts)
        res[ds] = {'rows': len(rows), 'llm_tokens_per_judgment': round(sum(map(sum, lt_n)) / len(rows), 1),
                   'student_tokens_per_judgment': round(sum(map(sum, st_n)) / len(rows), 1),
                   'llm_ops_per_student_ops': {k: round(llm_ops / sum(ce(t, k) for ts in st_n for t in ts), 1) for k in layers}}
        print(ds, res[ds], flush=True)
    (BENCH/'results'/'judge_arithmetic.json').write_text(json.dumps(res, indent=1))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--work', default='/tmp/bench_judge'); ap.add_argument('--only'); ap.add_argument('--fresh', action='store_true')
    ap.add_argument('--redo', nargs='+', default=[], help='judges (by name) to evaluate again, a student trained again; their rows are replaced in place')
    ap.add_argument('--speed', action='store_true'); ap.add_argument('--n-speed', type=int, default=200)
    ap.add_argument('--arithmetic', action='store_true', help="the LLM judge's arithmetic as a multiple of each student depth's")
    ap.add_argument('--depths', type=int, nargs='+', help='cross-encoder depths to train and time against the LLM judge (see depths())')
    a = ap.parse_args()
    if a.speed: return speed(a.n_speed, Path(a.work))
    if a.arithmetic: return arithmetic(a.n_speed)
    if a.depths: return depths(a.depths, a.n_speed, Path(a.work))
    from finetune_kit.judge import evaluate_judge
    out = BENCH/'results'; out.mkdir(exist_ok=True)
    path = out/'judge.json'
    res = {} if a.fresh or not path.exists() else json.loads(path.read_text())
    for ds, (kind, fit, dev, test) in datasets().items():
        if a.only and ds != a.only: continue
        for name, build in judges(kind, fit, dev, Path(a.work)):
            done = [r['judge'] for r in res.get(ds, [])]
            if name in done and name not in a.redo: continue
            judge, train_s = build()
            m = evaluate_judge(judge, test).metrics
            row = {'judge': name, 'kind': kind, 'n_train': len(fit) + len(dev or []), **m, 'train_s': train_s,
                   'threshold': getattr(judge, 'threshold', None)}
            if name in done: res[ds][done.index(name)] = row
            else: res.setdefault(ds, []).append(row)
            print(ds, row, flush=True)
            path.write_text(json.dumps(res, indent=1))
    (out/'judge.md').write_text(report(res)); print(report(res))

if __name__ == '__main__': main()
