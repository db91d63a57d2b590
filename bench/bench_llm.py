"""Benchmark: finetune_kit's LoRA fine-tuner against TRL's SFTTrainer with its own defaults, in one run.

Same model (the bundled SmolLM2-135M-Instruct, fp32 folder), same data, same LoRA (rank 8, alpha 16, every linear
layer, no dropout), same epochs, same learning rate, same examples per optimizer step (8):

- `finetune_kit`: `finetune_llm` with its defaults (each step's examples sorted by length and run in groups of at
  most 1,024 tokens, padding included; a bf16 copy of the frozen model where bf16 is fast; gradient checkpointing
  only where one example is longer than that; the LM head run on learnt positions only; loss on the assistant's
  replies).
- `TRL defaults`: `SFTTrainer(model, args=SFTConfig(...), train_dataset={"messages": ...}, peft_config=...)` with only
  the settings above given: batches of 8 padded to the longest, gradient checkpointing on, TRL's loss (on every token
  of the chat, its default for conversational data). On a CPU, TRL must be told `use_cpu` and `bf16`; both runs use
  bf16 where `finetune_kit.models.bf16_ok()` says the hardware is fast at it (fp32 on this machine).

Data sets, each split before anything else (text-to-SQL by example, SQuAD by paragraph, seed 0):
1. text-to-SQL (`shared/data/text2sql`): the notebook's split (150 train / 67 test), the training examples that fit in
   `--max-length` tokens, at most `--n-train-sql` (default: all of them); held out: test examples that fit, at most `--n-val`.
2. SQuAD-Shifts Reddit as chat: passage + question -> the first gold answer; paragraphs split half/half; at most
   `--n-train-squad` training chats (default 250: the larger set).

Measured per run, each in its own process: training tokens per second (non-padding tokens seen / training time),
peak resident memory of the process (model loading included), and the held-out loss: mean cross-entropy per
assistant-reply token of the held-out chats, computed the same way (`answer_loss`) for both models and for the base
model before training. Writes bench/results/llm.json and bench/results/llm.md. Not run by CI.

    python bench/bench_llm.py                       # both data sets
    python bench/bench_llm.py --sets sql --n-train-sql 16 --n-val 8   # a quick look
"""
import json, os, random, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, DATA, add_dirs, finish, log, md_table, package_versions, parser, report_tail, run_header, save_report

T2S = BENCH.parent / '../shared/data/text2sql/example_text2sql.json'
SQUAD_SYSTEM = 'Answer the question with a short span copied from the passage.'
RUNS = {'finetune_kit': 'finetune_kit (defaults)', 'trl': 'TRL SFTTrainer (defaults)'}


# ---------------------------------------------------------------- data
def sql_chats(seed: int) -> tuple[list, list]:
    "The notebook's text-to-SQL split, as chats: (train, test)."
    from finetune_kit.sql_eval import read_text2sql, sql_chat, split_text2sql
    train, test = split_text2sql(read_text2sql(T2S), 150, seed)
    return [sql_chat(r) for r in train], [sql_chat(r) for r in test]


def squad_chats(path: Path, seed: int) -> tuple[list, list]:
    "SQuAD passage + question -> first answer, as chats; paragraphs split half / half: (train, held-out)."
    paras = [p for art in json.loads(path.read_text())['data'] for p in art['paragraphs']]
    random.Random(seed).shuffle(paras)
    chat = lambda p, qa: {'messages': [{'role': 'system', 'content': SQUAD_SYSTEM},
                                       {'role': 'user', 'content': f"Passage: {p['context']}\n\nQuestion: {qa['question']}"},
                                       {'role': 'assistant', 'content': qa['answers'][0]['text']}]}
    half = len(paras) // 2
    pick = lambda ps: [chat(p, p['qas'][0]) for p in ps if p['qas'] and p['qas'][0]['answers']]
    return pick(paras[:half]), pick(paras[half:])


def fitting(chats: list, n: int, max_length: int, seed: int) -> list:
    "At most `n` of `chats` (seeded sample) whose tokens fit in `max_length`."
    from transformers import AutoTokenizer
    from finetune_kit.llm_ft import chat_tokens, smollm2_dir
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    fit = [c for c in chats if len(chat_tokens(tok, c)['input_ids']) <= max_length]
    return random.Random(seed).sample(fit, min(n, len(fit)))


# ---------------------------------------------------------------- one run, in its own process
def heldout_loss(model, tok, chats: list) -> float:
    "Mean cross-entropy per learnt token over `chats` (one at a time, no padding)."
    import torch
    from finetune_kit.llm_ft import answer_loss, chat_tokens
    lm = model.get_base_model() if hasattr(model, 'get_base_model') else model
    total = n = 0
    with torch.no_grad():
        for c in chats:
            r = chat_tokens(tok, c)
            k = sum(l != -100 for l in r['labels'][1:])
            batch = {'input_ids': torch.tensor([r['input_ids']]), 'labels': torch.tensor([r['labels']])}
            total += answer_loss(lm.eval(), batch).item() * k; n += k
    return total / n


def run_trl(train: list, out: Path, a) -> tuple:
    "TRL's SFTTrainer with its defaults but for what both runs share; (trained model, tokenizer, trainer)."
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from finetune_kit.llm_ft import smollm2_dir
    from finetune_kit.models import bf16_ok, default_device
    cfg = SFTConfig(output_dir=str(out), num_train_epochs=a.epochs, per_device_train_batch_size=8, learning_rate=a.lr,
                    max_length=a.max_length, seed=a.seed, report_to='none', save_strategy='no', logging_steps=5,
                    include_num_input_tokens_seen='non_padding', disable_tqdm=True,
                    use_cpu=default_device() == 'cpu', bf16=bf16_ok())     # on a CPU TRL needs both said; the same precision as ours
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules='all-linear', task_type='CAUSAL_LM')
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    tr = SFTTrainer(model=str(smollm2_dir()), args=cfg, train_dataset=Dataset.from_list(train), processing_class=tok, peft_config=lora)
    tr.train()
    return tr.model, tok, tr


def worker(a):
    "Train one way on the set's files, then score the held-out chats; prints one JSON line."
    from finetune_kit.llm_ft import finetune_llm, peak_rss_mb, reset_peak_rss, _train_stats
    run_dir = Path(a.run_dir) / a.set
    train = json.loads((run_dir / 'train.json').read_text()); val = json.loads((run_dir / 'val.json').read_text())
    reset_peak_rss()
    if a.worker == 'finetune_kit':
        chat = finetune_llm(train, run_dir / 'ftk', epochs=a.epochs, learning_rate=a.lr, max_length=a.max_length,
                            seed=a.seed, show_progress=False, resume=False)
        info = chat.run_info
        stats = {k: info[k] for k in ('train_loss', 'tokens_per_s', 'train_s', 'gradient_checkpointing', 'bf16')}
        stats['per_pass'] = f"groups of <= {info['tokens_per_pass']} tokens"
        peak = peak_rss_mb()
        from transformers import AutoModelForCausalLM, AutoTokenizer     # the merged folder in fp32, as the base and TRL's model are scored
        model, tok = AutoModelForCausalLM.from_pretrained(info['model_dir']), AutoTokenizer.from_pretrained(info['model_dir'])
    else:
        model, tok, tr = run_trl(train, run_dir / 'trl', a)
        stats = {**_train_stats(tr), 'gradient_checkpointing': tr.args.gradient_checkpointing, 'per_pass': '8 examples, padded', 'bf16': tr.args.bf16}
        peak = peak_rss_mb()
    print(json.dumps({**stats, 'peak_rss_mb': peak, 'heldout_loss': heldout_loss(model, tok, val)}))


def base_loss(a):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from finetune_kit.llm_ft import smollm2_dir
    val = json.loads((Path(a.run_dir) / a.set / 'val.json').read_text())
    print(json.dumps({'heldout_loss': heldout_loss(AutoModelForCausalLM.from_pretrained(smollm2_dir()),
                                                   AutoTokenizer.from_pretrained(smollm2_dir()), val)}))


def sub(a, *extra) -> dict:
    "Run this script as a worker process (a clean memory measurement); its last stdout line as JSON."
    cmd = [sys.executable, __file__, '--set', a.set, '--run-dir', str(a.run_dir), '--epochs', str(a.epochs), '--lr', str(a.lr),
           '--max-length', str(a.max_length), '--seed', str(a.seed), *extra]
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode: raise RuntimeError(f"{' '.join(extra)} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1]); res['process_s'] = round(time.time() - t, 1)
    return res


# ---------------------------------------------------------------- report
def render(res: dict) -> list:
    rows = []
    for s, r in res['sets'].items():
        ftk, trl = r['runs']['finetune_kit'], r['runs']['trl']
        for key, label in RUNS.items():
            x = r['runs'][key]
            rows.append([r['label'], label, f"{x['tokens_per_s']:.0f}", f"{x['tokens_per_s'] / trl['tokens_per_s']:.2f}x",
                         f"{x['peak_rss_mb'] / 1024:.2f}", f"{r['base_loss']:.3f} → {x['heldout_loss']:.3f}",
                         'on' if x['gradient_checkpointing'] else 'off', x['per_pass']])
    lines = ['# Local LoRA fine-tuning: finetune_kit against TRL defaults', '',
             f"SmolLM2-135M-Instruct, LoRA rank 8 on every linear layer, {res['args']['epochs']} epoch(s), learning rate "
             f"{res['args']['lr']}, 8 examples a step, examples up to {res['args']['max_length']} tokens. CPU: {res['cpu']['model']}, "
             f"{res['cpu']['usable_cpus']} cores.", '',
             *md_table(['data', 'trainer', 'tokens/s', 'vs TRL', 'peak GB', 'held-out loss (base → tuned)', 'grad. ckpt', 'one forward pass'],
                       rows, left=2), '']
    for s, r in res['sets'].items():
        lines.append(f"- {r['label']}: {r['n_train']} training chats ({r['n_train_tokens']} tokens, {r['min_len']}-{r['max_len']} a chat), "
                     f"{r['n_val']} held-out chats.")
    lines += ['', 'tokens/s: non-padding tokens seen in training over the training time (model loading and evaluation '
              'excluded). Peak GB: the training process\'s peak resident memory, model loading included. Held-out loss: '
              'mean cross-entropy per token of the assistant\'s replies in the held-out chats, computed the same way for '
              'every model.', '', *report_tail(res)]
    return lines


def main():
    ap = parser(__doc__, 'reddit_v1.0.json')
    add_dirs(ap, BENCH / '_runs' / 'llm')
    ap.add_argument('--sets', default='sql,squad')
    ap.add_argument('--n-train-sql', type=int, default=150, help='text-to-SQL training chats (150: the whole training split)')
    ap.add_argument('--n-train-squad', type=int, default=250, help='SQuAD chats: the larger set')
    ap.add_argument('--n-val', type=int, default=64)
    ap.add_argument('--epochs', type=float, default=1)
    ap.add_argument('--lr', type=float, default=2e-4)
    ap.add_argument('--max-length', type=int, default=1024)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--set'); ap.add_argument('--worker'); ap.add_argument('--base', action='store_true')
    a = ap.parse_args()
    if a.worker: return worker(a)
    if a.base: return base_loss(a)
    from transformers import AutoTokenizer
    from finetune_kit.llm_ft import chat_tokens, smollm2_dir
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    res = {**run_header(__file__), 'versions': package_versions(('finetune_kit', 'trl', 'peft', 'transformers', 'torch')),
           'args': {k: getattr(a, k) for k in ('n_train_sql', 'n_train_squad', 'n_val', 'epochs', 'lr', 'max_length', 'seed')}, 'sets': {}}
    for s in a.sets.split(','):
        train, val = sql_chats(a.seed) if s == 'sql' else squad_chats(a.data, a.seed)
        train, val = fitting(train, a.n_train_sql if s == 'sql' else a.n_train_squad, a.max_length, a.seed), fitting(val, a.n_val, a.max_length, a.seed)
        d = Path(a.run_dir) / s; d.mkdir(parents=True, exist_ok=True)
        (d / 'train.json').write_text(json.dumps(train)); (d / 'val.json').write_text(json.dumps(val))
        lens = [len(chat_tokens(tok, c)['input_ids']) for c in train]
        a.set = s
        r = {'label': 'text-to-SQL' if s == 'sql' else 'SQuAD-Shifts Reddit (chat)', 'n_train': len(train), 'n_val': len(val),
             'n_train_tokens': sum(lens), 'min_len': min(lens), 'max_len': max(lens), 'runs': {}}
        r['base_loss'] = sub(a, '--base')['heldout_loss']
        for w in RUNS:
            log(f"{s}: {w}")
            r['runs'][w] = sub(a, '--worker', w); log(f"  {r['runs'][w]}")
        res['sets'][s] = r
    finish(res)
    print(save_report(res, a.results_dir, 'llm', render))


if __name__ == '__main__':
    main()
