"""LocalChat generation speed on the `eval-rag` workload at k = 3: float32 (the old default) vs bfloat16
(the default where the CPU has AVX512-BF16), same questions, same prompts, measured in one run.

Each question of a seeded sample of SQuAD-Shifts gets its gold paragraph among 2 random others
(k = 3 passages, RA-DIT's prompt), up to 32 new tokens, greedy. Reports questions per second, the
speed-up, F1 of each and how many answers are identical. Writes results/local_chat.{json,md}.

    python bench/bench_local_chat.py [--dataset reddit] [--n 48] [--batch-size 16]
"""
import argparse, json, random, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, DATA

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
    for dtype in ['float32', 'bfloat16']:
        llm = LocalChat(batch_size=a.batch_size, dtype=dtype).load()
        llm.generate(convs[:2], max_tokens=4)                       # warm-up, not timed
        t = time.perf_counter(); out = llm.generate(convs, max_tokens=32, temperature=0.0); dt = time.perf_counter() - t
        answers[dtype] = out
        f1 = sum(token_f1(o or '', ds.responses[q]) for o, q in zip(out, qids)) / a.n
        rows.append({'dtype': dtype, 'seconds': round(dt, 1), 'questions_per_s': round(a.n / dt, 3), 'f1': round(f1, 3)})
        print(rows[-1], flush=True)
    same = sum(x == y for x, y in zip(answers['float32'], answers['bfloat16']))
    res = {'dataset': a.dataset, 'n': a.n, 'k': 3, 'batch_size': a.batch_size, 'rows': rows,
           'speedup': round(rows[1]['questions_per_s'] / rows[0]['questions_per_s'], 2), 'identical_answers': same}
    out = BENCH/'results'; out.mkdir(exist_ok=True)
    (out/'local_chat.json').write_text(json.dumps(res, indent=1))
    md = [f"LocalChat on eval-rag k=3 ({a.dataset}, {a.n} questions, batch {a.batch_size}, 32 new tokens)", '',
          '| dtype | seconds | questions/s | F1 |', '|---|---|---|---|']
    md += [f"| {r['dtype']} | {r['seconds']} | {r['questions_per_s']} | {r['f1']} |" for r in rows]
    md += ['', f"speed-up {res['speedup']}x; identical answers {same} of {a.n}"]
    (out/'local_chat.md').write_text('\n'.join(md) + '\n'); print('\n'.join(md))

if __name__ == '__main__': main()
