"""Benchmark: routing questions to their Wikipedia article, base vs fine-tuned embedding router vs an LLM.

1. SQuAD v1.1 dev (`../shared/data/squad_shifts/squaddev_v1.1.json`): 48 articles, one choice each
   (title + the first 40 words of the article). Each article's first paragraph, and a seeded half
   of the others, give the training questions; the other paragraphs' questions are the validation
   set (`finetune_kit.router.squad_routing_task`). Files: `choices.json`, `train.json`, `val.json`.
2. Base: `ftk route --router MINILM --choices choices.json --queries val.json --json`.
3. Fine-tuned: `ftk finetune-router --choices choices.json --train train.json --out DIR`, then
   `ftk route --router DIR --queries val.json --json`.
4. The usual alternative, an LLM picking from the numbered choices (`finetune_kit.router.LLMRouter`
   with the bundled SmolLM2-135M-Instruct), on a seeded sample of the validation questions (it is
   slow: every prompt holds all 48 descriptions); both embedding routers are scored on the same sample.
5. `bench/results/router.json` and `bench/results/router.md`.

Not run by CI.

    python bench/bench_router.py
    python bench/bench_router.py --n-llm 0        # skip the LLM
"""
import json, random, shlex, sys, time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BENCH, add_dirs, base_model_dir, finish, fmt, ftk_json, ftk_train, log, md_table, package_versions,
                     parser, report_tail, run_header, save_report)


def route(ftk, router, queries_p, extra=()) -> dict:
    out, wall, _ = ftk_json(ftk, ['route', '--router', router, '--queries', queries_p, *extra])
    out['route_wall_s'] = round(wall, 2)
    log(f"  match_rate={out['match_rate']:.4f} top3_rate={out['top3_rate']:.4f} n={out['n_queries']} ({wall:.0f} s)")
    return out


def sample_rate(out: dict, sample: list[dict]) -> float:
    "Match rate of `ftk route` output on the queries of `sample` (matched by position in val.json)."
    return sum(out['routes'][i]['routes'][0][0] == q['choice'] for i, q in sample) / len(sample)


def render(res: dict) -> list:
    "The report's markdown lines."
    b, f, l = res['base'], res['fine_tuned'], res['llm']
    st = res['train_settings']
    lines = [
        '# Router fine-tuning: 48 Wikipedia articles', '',
        f"SQuAD v1.1 dev: route each question to its article (48 choices: title + first 40 words). Training: "
        f"{res['data']['n_train']} questions (each article's first paragraph and half of the others); validation: "
        f"{res['data']['n_val']} questions of the other paragraphs. Base model all-MiniLM-L6-v2; fine-tuning "
        f"{st['epochs']} epoch(s), batch {st['batch_size']}, learning rate {st['learning_rate']} "
        f"({res['train_wall_s']:.0f} s, whole `ftk finetune-router` command). CPU: {res['cpu']['model']}, {res['cpu']['usable_cpus']} cores.", '',
        *md_table(['router', 'match rate', 'top-3 rate', 'queries'],
                  [['base MiniLM', fmt(b['match_rate']), fmt(b['top3_rate']), b['n_queries']],
                   ['fine-tuned MiniLM', fmt(f['match_rate']), fmt(f['top3_rate']), f['n_queries']]]),
    ]
    if l:
        lines += ['', f"On a seeded sample of {l['n_queries']} of the validation questions, with an LLM choosing instead:", '',
                  *md_table(['router', 'match rate', 'wall time (s)'],
                            [['base MiniLM', fmt(l['base_match_rate_same_sample']), '-'],
                             ['fine-tuned MiniLM', fmt(l['fine_tuned_match_rate_same_sample']), '-'],
                             ['LLM selector, SmolLM2-135M-Instruct (local)', fmt(l['match_rate']), f"{l['wall_s']:.0f}"]]), '',
                  f"The LLM gave no usable choice for {l['no_answer']} of {l['n_queries']} questions. Routing all "
                  f"{f['n_queries']} validation questions with the fine-tuned embedding router took {f['route_wall_s']:.0f} s, "
                  'model load included.']
    return lines + ['', 'Match rates in percent.', '', *report_tail(res)]


def main():
    ap = parser(__doc__, 'squaddev_v1.1.json')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--epochs', type=int, default=None, help="finetune-router's default if not given")
    ap.add_argument('--n-llm', type=int, default=100, help='validation questions the LLM router answers (0: skip)')
    add_dirs(ap, BENCH / '_runs' / 'router', ftk_help=None)
    args = ap.parse_args()

    from finetune_kit.router import squad_routing_task
    run_dir = args.run_dir.resolve(); run_dir.mkdir(parents=True, exist_ok=True)
    ftk, base = shlex.split(args.ftk), base_model_dir()
    res = dict(**run_header(__file__), seed=args.seed, data_file=str(args.data.resolve()), base_model=str(base),
               versions=package_versions(), errors=[])

    log('1/4 data')
    choices, train, val = squad_routing_task(args.data, seed=args.seed)
    cp, tp, vp = run_dir / 'choices.json', run_dir / 'train.json', run_dir / 'val.json'
    cp.write_text(json.dumps([asdict(c) for c in choices], ensure_ascii=False, indent=1))
    tp.write_text(json.dumps(train, ensure_ascii=False)); vp.write_text(json.dumps(val, ensure_ascii=False))
    res['data'] = dict(n_choices=len(choices), n_train=len(train), n_val=len(val))
    log(f"{len(choices)} choices, {len(train)} training questions, {len(val)} validation questions")

    log('2/4 base router')
    res['base'] = route(ftk, base, vp, ['--choices', cp, '--top-n', '3'])

    log('3/4 fine-tuned router')
    out = run_dir / 'router'
    try: wall = ftk_train(ftk, ['finetune-router', '--choices', cp, '--train', tp, '--out', out,
                                *(['--epochs', args.epochs] if args.epochs else [])], out)
    except RuntimeError as e: sys.exit(str(e))
    res['train_wall_s'] = round(wall, 2)
    res['train_settings'] = json.loads((out / 'finetune_kit.json').read_text())
    res['fine_tuned'] = route(ftk, out, vp, ['--top-n', '3'])

    res['llm'] = None
    if args.n_llm:
        log(f'4/4 LLM router (SmolLM2-135M-Instruct) on {args.n_llm} validation questions')
        from finetune_kit.router import LLMRouter, evaluate_router
        from finetune_kit.llm import LocalChat
        idx = sorted(random.Random(args.seed).sample(range(len(val)), min(args.n_llm, len(val))))
        sample = [(i, val[i]) for i in idx]
        t = time.perf_counter()
        llm_res = evaluate_router(LLMRouter(choices, LocalChat(batch_size=8)), [q for _, q in sample], top_ns=())
        dt = time.perf_counter() - t
        res['llm'] = dict(model='SmolLM2-135M-Instruct (bundled, local)', n_queries=len(sample),
                          match_rate=llm_res.metrics['match_rate'], wall_s=round(dt, 1),
                          no_answer=int(llm_res.per_query['routed'].isna().sum()),
                          base_match_rate_same_sample=sample_rate(res['base'], sample),
                          fine_tuned_match_rate_same_sample=sample_rate(res['fine_tuned'], sample))
        log(f"  LLM match_rate={res['llm']['match_rate']:.4f} ({dt:.0f} s); on the same questions base "
            f"{res['llm']['base_match_rate_same_sample']:.4f}, fine-tuned {res['llm']['fine_tuned_match_rate_same_sample']:.4f}")

    for k in ('base', 'fine_tuned'): res[k].pop('routes', None)        # keep the JSON small
    finish(res)
    print(save_report(res, args.results_dir, 'router', render), end='')


if __name__ == '__main__':
    main()
