"""Can distillation lift the 1-layer cross-encoder student to the 3-layer one's agreement? On DEV splits only (`bench_judge.dev_sets`).

A 1-layer student is the only depth that clears the issue's 50x against SmolLM2 read by its token probabilities on
TruthfulQA (results/judge_depths.md), and its best recipe trails 3 layers on dev (results/judge_recipe.md). Here it
learns from a 3-layer teacher too: soft labels are the teacher's probabilities on the fit rows, out of fold (4 folds by
question, each fold scored by a teacher that never saw it, so the probabilities carry its real doubt). Students: the
people's labels ('hard'), the teacher's probabilities ('soft'), their mean ('mix'); 1 layer, the default recipe
(`judge.CE_LR`, `CE_EPOCHS`), seeds 0-2, dev kappa (a correctness threshold tuned on dev, as in bench_judge_layers.py).
Outcome (README): 'mix' lifts TruthfulQA dev kappa 0.542 -> 0.568, HHH stays at 0.414; mean 0.478 -> 0.491, short of
3 layers' 0.530 with the same recipe. So distillation is not added to `finetune_judge`.

    python bench/bench_judge_distill.py [LAYERS ...]     # default 1; results/judge_distill.json (teachers in /tmp/judge_distill)
"""
import json, random, shutil, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_judge as B
from finetune_kit.judge import student_pairs, CrossEncoderJudge, tune_threshold, evaluate_judge, CE_LR, CE_EPOCHS
from finetune_kit.rerank import finetune_reranker, Reranker

WORK, RES = Path('/tmp/judge_distill'), B.BENCH/'results'/'judge_distill.json'
FOLDS, TEACHER_LAYERS, SEEDS = 4, 3, (0, 1, 2)
key = lambda r: r.get('id', r['question'])

def train(pairs, out: Path, layers: int, seed: int) -> Path:
    if not (out/'config.json').exists():
        shutil.rmtree(out, ignore_errors=True)
        finetune_reranker(pairs, out, layers=layers, seed=seed, epochs=CE_EPOCHS, learning_rate=CE_LR, max_length=256, show_progress=False)
    return out

def dev_kappa(out: Path, kind: str, dev) -> float:
    j = CrossEncoderJudge(out, kind)
    if kind == 'correctness': tune_threshold(j, dev)
    return round(evaluate_judge(j, dev).metrics['kappa'], 3)

def out_of_fold(name: str, kind: str, fit) -> list[float]:
    "The teacher's probability for each of `student_pairs(fit)`, each from a teacher trained on the other folds."
    path = WORK/f'{name}-soft.json'
    if path.exists(): return json.loads(path.read_text())
    pairs, per = student_pairs(fit, kind), 1 if kind == 'correctness' else 2        # pairs follow the rows: 1 a correctness row, 2 a pair
    ids = sorted({key(r) for r in fit}, key=str); random.Random(7).shuffle(ids)
    fold = {k: i % FOLDS for i, k in enumerate(ids)}
    owner = [fold[key(r)] for r in fit if r.get('label') is not None for _ in range(per)]
    soft = [None] * len(pairs)
    for f in range(FOLDS):
        teacher = Reranker(train([p for p, o in zip(pairs, owner) if o != f], WORK/f'{name}-teacher{f}', TEACHER_LAYERS, 0))
        idx = [i for i, o in enumerate(owner) if o == f]
        for i, s in zip(idx, teacher.score_pairs([(pairs[i]['query'], pairs[i]['passage']) for i in idx])): soft[i] = float(s)
    path.write_text(json.dumps(soft)); return soft

def main(depths):
    WORK.mkdir(exist_ok=True)
    res = json.loads(RES.read_text()) if RES.exists() else {}
    for name, (kind, fit, dev) in B.dev_sets().items():
        hard = student_pairs(fit, kind); soft = out_of_fold(name, kind, fit)
        labels = {'hard': hard, 'soft': [p | {'label': s} for p, s in zip(hard, soft)],
                  'mix': [p | {'label': (p['label'] + s) / 2} for p, s in zip(hard, soft)]}
        for layers in depths:
            for v, pairs in labels.items():
                for seed in SEEDS:
                    k = f'{name}|{layers}|{v}|{seed}'
                    if k in res: continue
                    out = train(pairs, WORK/f'{name}-{layers}-{v}-{seed}', layers, seed)
                    res[k] = dev_kappa(out, kind, dev); shutil.rmtree(out)
                    RES.write_text(json.dumps(res, indent=1)); print(k, res[k], flush=True)
    for layers in depths:
        for v in ('hard', 'soft', 'mix'):
            m = {n: float(np.mean([res[f'{n}|{layers}|{v}|{s}'] for s in SEEDS])) for n in ('truthfulqa', 'hhh')}
            print(f"{layers} layer(s), {v}: dev kappa " + ', '.join(f'{n} {x:.3f}' for n, x in m.items()) + f", mean {np.mean(list(m.values())):.3f}")

if __name__ == '__main__': main([int(x) for x in sys.argv[1:]] or [1])
