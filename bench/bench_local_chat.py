"""LocalChat generation speed on the `eval-rag` workload at k = 3, same questions, same prompts, measured in one
run: float32 in fixed batches (the old default), bfloat16 in fixed batches, and today's default (bfloat16 where
the CPU has AVX512-BF16, batches cut at `CPU_BATCH_TOKENS` padded tokens on a CPU).

Each question of a seeded sample of SQuAD-Shifts gets its gold paragraph among 2 random others
(k = 3 passages, RA-DIT's prompt), up to 32 new tokens, greedy. Reports questions per second, the
speed-up over the first row, F1 of each and how many answers are the same as the first row's. Writes results/local_chat.{json,md}.

    python bench/bench_local_chat.py [--dataset reddit] [--n 48] [--batch-size 16]
"""
import argparse, json, random, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, DATA, cpu_info, package_versions

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dataset', default='reddit'); ap.add_argument('--n', type=int, default=48)
    ap.add_argument('--batch-size', type=int, default=16); ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    from finetune_kit.core import load_squad
    from finetune_kit.radit import rag_messages, SYSTEM, token_f1
    from finetune_kit.llm import LocalChat
    ds = load_squad(DATA/f'{a.dataset}_v1.0.json')
    rng = random.Random(a.seed)
    qids, docs = rng.sample(sorted(ds.queries), a.n), sorted(ds.corpus)
    convs = []
    for q in qids:
        gold = ds.relevant_docs[q][0]
        ps = [gold] + rng.sample([d for d in docs if d != gold], 2); rng.shuffle(ps)
        convs.append(rag_messages(ds.queries[q], [ds.corpus[p] for p in ps], SYSTEM))
    rows, answers = [], {}
    configs = {'float32, fixed batches (old default)': dict(dtype='float32', max_batch_tokens=None),
               'bfloat16, fixed batches': dict(dtype='bfloat16', max_batch_tokens=None),
               'default (bfloat16, token budget)': {}}
    for name, kw in configs.items():
        llm = LocalChat(batch_size=a.batch_size, **kw).load()
        llm.generate(convs[:2], max_tokens=4)                       # warm-up, not timed
        t = time.perf_counter(); out = llm.generate(convs, max_tokens=32, temperature=0.0); dt = time.perf_counter() - t
        answers[name] = out
        f1 = sum(token_f1(o or '', ds.responses[q]) for o, q in zip(out, qids)) / a.n
        first = next(iter(answers.values()))
        rows.append({'config': name, 'dtype': str(llm.model.dtype).split('.')[-1], 'max_batch_tokens': llm.max_batch_tokens,
                     'seconds': round(dt, 1), 'questions_per_s': round(a.n / dt, 3), 'f1': round(f1, 3),
                     'same_answers_as_first': sum(x == y for x, y in zip(out, first))})
        rows[-1]['speedup'] = round(rows[-1]['questions_per_s'] / rows[0]['questions_per_s'], 2)
        print(rows[-1], flush=True)
    res = {'dataset': a.dataset, 'n': a.n, 'k': 3, 'batch_size': a.batch_size, 'rows': rows, 'cpu': cpu_info(),
           'versions': package_versions(), 'speedup': rows[-1]['speedup']}
    out = BENCH/'results'; out.mkdir(exist_ok=True)
    (out/'local_chat.json').write_text(json.dumps(res, indent=1))
    md = [f"LocalChat on eval-rag k=3 ({a.dataset}, {a.n} questions, up to {a.batch_size} rows a batch, 32 new tokens)", '',
          '| weights and batches | seconds | questions/s | speed-up | F1 | answers as float32 |', '|---|---|---|---|---|---|']
    md += [f"| {r['config']} | {r['seconds']} | {r['questions_per_s']} | {r['speedup']}x | {r['f1']} | {r['same_answers_as_first']} of {a.n} |"
           for r in rows]
    (out/'local_chat.md').write_text('\n'.join(md) + '\n'); print('\n'.join(md))

if __name__ == '__main__': main()
