"""How the cross-encoder student's depth (`judge.CE_LAYERS`: the first N of MiniLM's 6 layers) was chosen, on DEV splits only
(TruthfulQA: bench's fit/dev; HHH: a dev split carved by prompt from its training rows). Speed on 200 dev rows.

    python bench/bench_judge_layers.py [6 3 2 1]      # trains into /tmp/ce_layers, results in bench/results/judge_layers.json
    python bench/bench_judge_layers.py --speed      # afterwards, on a quiet machine: the students and the token-probability judge back to back
"""
import json, sys, time, shutil
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_judge as B
from finetune_kit.judge import finetune_judge, evaluate_judge, TokenProbJudge
W = Path('/tmp/ce_layers'); W.mkdir(exist_ok=True)
(tq_kind, fit, dev), (h_kind, hfit, hdev) = B.dev_sets().values()
res_path = B.BENCH/'results'/'judge_layers.json'; res = json.loads(res_path.read_text()) if res_path.exists() else {}
def speed():
    "Judgments per second on the same 200 dev rows, one process, back to back (6 layers first and last, so a change of load shows)."
    from finetune_kit.judge import load_judge
    rows = (dev * 2)[:200]
    r = {f'cross-encoder, {n} layers' + (' (again)' if i else ''): B.timed(load_judge(W/f'truthfulqa-{n}'), rows) for i, n in ((0, 6), (0, 3), (0, 2), (1, 6))}
    r['SmolLM2, token probabilities (100 rows)'] = B.timed(TokenProbJudge('local', 'correctness'), rows[:100])
    res['speed_truthfulqa_dev'] = r; res_path.write_text(json.dumps(res, indent=1)); print(r)

if sys.argv[1:] == ['--speed']: speed(); sys.exit()
for n in [int(x) for x in sys.argv[1:]] or [6, 3, 2, 1]:
    for name, kind, f, d in (('truthfulqa', tq_kind, fit, dev), ('hhh', h_kind, hfit, hdev)):
        key = f'{name}-{n}'
        if key in res: continue
        out = W/key; shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        j = finetune_judge(f, out, student='cross-encoder', kind=kind, dev=d if kind == 'correctness' else None,
                           layers=n, show_progress=False)
        train_s = time.perf_counter() - t
        m = evaluate_judge(j, d).metrics     # dev only (threshold tuned on the same dev for correctness: optimistic, same for every n)
        res[key] = {'layers': n, 'dev_kappa': m['kappa'], 'dev_n': m['n'], 'pc': m.get('position_consistency'),
                    'per_s': B.timed(j, (d * 3)[:200]), 'train_s': round(train_s, 1)}
        print(key, res[key], flush=True); res_path.write_text(json.dumps(res, indent=1))
