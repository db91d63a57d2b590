"""Benchmark: the text-to-SQL tutorial as commands, base SmolLM2 against its LoRA fine-tune.

1. `shared/data/text2sql`: 217 sql-create-context examples, split by example (seed 0): 150 train, 67 test,
   before anything else. Training chats that fit in `--max-length` tokens are kept; the test split is scored whole.
2. `ftk finetune-llm --train train.jsonl --val val.jsonl --out RUN/sql --epochs E --lr LR --json`
   (val: the test chats that fit, for the validation loss only).
3. `ftk eval-sql --data test.json --model local --json` and the same with `--model local:RUN/sql`.
4. bench/results/text2sql.json and bench/results/text2sql.md.

    python bench/bench_text2sql.py
"""
import json, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, add_dirs, finish, ftk_json, log, md_table, package_versions, report_tail, run_header, save_report

T2S = BENCH.parent / '../shared/data/text2sql/example_text2sql.json'
SCORES = ('valid_sql', 'exact_match', 'exec_match', 'n', 'n_errors', 'n_no_sql')


def write_data(run_dir: Path, max_length: int, seed: int) -> dict:
    "The split as files: train/val chat JSONL (chats that fit), test.json in the source format (every test example)."
    from transformers import AutoTokenizer
    from finetune_kit.llm_ft import chat_tokens, smollm2_dir
    from finetune_kit.sql_eval import read_text2sql, sql_chat, split_text2sql
    raw = json.loads(T2S.read_text())
    rows = read_text2sql(T2S)
    key = {r['question'] + r['sql']: x for r, x in zip(rows, raw)}
    train, test = split_text2sql(rows, 150, seed)
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    fits = lambda rs: [sql_chat(r) for r in rs if len(chat_tokens(tok, sql_chat(r))['input_ids']) <= max_length]
    tr, va = fits(train), fits(test)
    (run_dir / 'train.jsonl').write_text(''.join(json.dumps(c) + '\n' for c in tr))
    (run_dir / 'val.jsonl').write_text(''.join(json.dumps(c) + '\n' for c in va))
    (run_dir / 'test.json').write_text(json.dumps([key[r['question'] + r['sql']] for r in test]))
    return {'n_train': len(tr), 'n_train_split': len(train), 'n_val': len(va), 'n_test': len(test)}


def render(res: dict) -> list:
    b, f, t = res['base'], res['finetuned'], res['train']
    row = lambda name, r: [name, f"{100 * r['valid_sql']:.1f}", f"{100 * r['exact_match']:.1f}", f"{100 * r['exec_match']:.1f}",
                           r['n_no_sql'], r['n_errors']]
    return ['# Text-to-SQL: SmolLM2 before and after LoRA fine-tuning', '',
            f"All {b['n']} held-out questions of the text-to-SQL data (split by example, seed {res['args']['seed']}); "
            f"fine-tuned on the {res['data']['n_train']} of {res['data']['n_train_split']} training examples whose chat fits in "
            f"{res['args']['max_length']} tokens, {res['args']['epochs']} epochs, learning rate {res['args']['lr']}.", '',
            *md_table(['model', 'valid SQL %', 'exact match %', 'execution match %', 'replies without SQL', 'failed'],
                      [row('SmolLM2-135M-Instruct (base)', b), row('fine-tuned (LoRA r=8)', f)]), '',
            f"Training: {t['n_train_tokens']} tokens, {t['tokens_per_s']:.0f} tokens/s, {t['wall_s']:.0f} s, peak memory "
            f"{t['peak_rss_mb'] / 1024:.2f} GB; validation loss (held-out chats that fit) {t['val_loss_before']:.3f} → "
            f"{t['val_loss_after']:.3f}.", '',
            'Commands: ' + '; '.join(f"`{c}`" for c in res['commands']), '', *report_tail(res)]


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_dirs(ap, BENCH / '_runs' / 'text2sql')
    ap.add_argument('--epochs', default='2'); ap.add_argument('--lr', default='1e-3')
    ap.add_argument('--max-length', type=int, default=1024); ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    ftk = a.ftk.split()
    run = a.run_dir; run.mkdir(parents=True, exist_ok=True)
    res = {**run_header(__file__), 'versions': package_versions(('finetune_kit', 'trl', 'peft', 'transformers', 'torch')),
           'args': {'epochs': a.epochs, 'lr': a.lr, 'max_length': a.max_length, 'seed': a.seed}}
    res['data'] = write_data(run, a.max_length, a.seed); log(f"data: {res['data']}")
    train = ['finetune-llm', '--train', run / 'train.jsonl', '--val', run / 'val.jsonl', '--out', run / 'sql', '--epochs', a.epochs,
             '--lr', a.lr, '--max-length', a.max_length, '--seed', a.seed]
    res['train'], _, _ = ftk_json(ftk, train); log(f"trained: {res['train']}")
    for name, model in [('base', 'local'), ('finetuned', f"local:{run / 'sql'}")]:
        res[name], _, _ = ftk_json(ftk, ['eval-sql', '--data', run / 'test.json', '--model', model], SCORES)
        log(f"{name}: {res[name]}")
    res['commands'] = [' '.join(['ftk', *map(str, train), '--json']), f"ftk eval-sql --data {run / 'test.json'} --model local --json",
                       f"ftk eval-sql --data {run / 'test.json'} --model local:{run / 'sql'} --json"]
    finish(res)
    print(save_report(res, a.results_dir, 'text2sql', render))


if __name__ == '__main__':
    main()
