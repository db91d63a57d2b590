# %% [markdown]
# # cli
#
# > The `ftk` command: one sub-command per workflow, and `ftk quickstart`, the whole embedding workflow offline in about ten minutes.

# %%
#| default_exp cli

# %%
#| export
from __future__ import annotations
import argparse, json, random, shutil, sys, time
from pathlib import Path
from finetune_kit.core import (QADataset, DatasetError, load_documents, make_nodes, python_docs, split_by_doc,
                               write_json_atomic)

# %%
#| hide
from fastcore.test import test_eq, test_fail
import subprocess, signal, tempfile, os, re
from finetune_kit.core import load_squad, sample_queries, read_jsonl

# %% [markdown]
# Each sub-command is a thin layer over the notebooks' functions: parse arguments, load and
# validate the inputs (so a bad file stops before any model is loaded), call the library,
# print a short result. Commands that report metrics print them as a table, and with `--json`
# end with one line of JSON for scripts to read.

# %% [markdown]
# ## `ftk generate-qa`

# %%
#| export
def cmd_generate_qa(a):
    from finetune_kit.llm import get_llm
    from finetune_kit.synth import generate_questions, qa_dataset
    docs = load_documents(a.docs)
    nodes = make_nodes(docs, max_words=a.chunk_words)
    if a.max_chunks: nodes = nodes[:a.max_chunks]
    kw = {'concurrency': a.concurrency} if a.llm.startswith('openai:') else {}
    llm = get_llm(a.llm, base_url=a.base_url, **kw)
    progress = Path(str(a.out) + '.progress.jsonl')
    print(f"{len(docs)} documents -> {len(nodes)} chunks; progress in {progress}", file=sys.stderr)
    rows = generate_questions(nodes, llm, progress, n_questions=a.questions_per_chunk, batch_size=a.batch_size)
    ds = qa_dataset(nodes, rows)
    ds.save_json(a.out)
    skipped = sum('skipped' in r for r in rows if r['node_id'] in {n.id for n in nodes})
    print(f"wrote {a.out}: {len(ds)} questions over {len(ds.corpus)} chunks ({skipped} chunks skipped)")

# %% [markdown]
# ## `ftk finetune-embeddings` and `ftk eval-retrieval`

# %%
#| export
def _load(path) -> QADataset:
    try: return QADataset.from_json(path)
    except DatasetError as e: sys.exit(f"error: {e}")

def cmd_finetune_embeddings(a):
    from finetune_kit.embed_ft import finetune_embeddings
    train = _load(a.train)
    val = _load(a.val) if a.val else None            # both files are checked before training starts
    t = time.time()
    finetune_embeddings(train, a.out, model=a.model, epochs=a.epochs, batch_size=a.batch_size,
                        hard_negatives=a.hard_negatives, learning_rate=a.lr, max_seq_length=a.max_seq_length)
    print(f"saved fine-tuned model to {a.out} ({time.time() - t:.0f} s)")
    if val:
        from finetune_kit.retrieval import evaluate_retrieval, compare
        res = {'base': evaluate_retrieval(val, a.model), 'fine-tuned': evaluate_retrieval(val, a.out)}
        print(compare(res).to_string())

def _encoder(a):
    "The encoder `eval-retrieval` scores: a model path or the bundled MiniLM (or `openai:MODEL`), with `--adapter DIR` on top."
    adapter, model = getattr(a, 'adapter', None), a.model
    if not adapter and not str(model or '').startswith('openai:'): return model
    from finetune_kit.adapter import AdapterEncoder, AdapterError, CachedEmbedder, get_embedder
    try:
        emb = get_embedder(model, base_url=a.base_url) if model else None
        if adapter: return AdapterEncoder.load(adapter, embedder=emb, cache=a.cache, base_url=a.base_url)
        return CachedEmbedder(emb, a.cache) if a.cache else emb
    except AdapterError as e: sys.exit(f"error: {e}")

def cmd_eval_retrieval(a):
    from finetune_kit.retrieval import evaluate_retrieval
    ds = _load(a.data)
    res = _eval_reranked(ds, a) if getattr(a, 'reranker', None) else evaluate_retrieval(ds, _encoder(a), k=a.top_k)
    m = {k: round(v, 4) if isinstance(v, float) else v for k, v in res.metrics.items()}
    if not a.json:
        for k, v in m.items(): print(f"{k:>10}  {v}")
    else: print(json.dumps(m))

# %% [markdown]
# ## `ftk finetune-reranker` and `ftk eval-retrieval --reranker`
#
# `finetune-reranker` takes the same QADataset file (positives: the relevant passages; hard
# negatives: the passages `--retriever` ranks highest that are not relevant) or a JSONL file of
# labelled pairs. `eval-retrieval --reranker DIR` retrieves as before and lets the cross-encoder
# reorder the top `--rerank-top-k`; its output keeps the same keys, and it reports the scoring
# throughput on stderr. Both check their inputs before loading any model.

# %%
#| export
def _model_arg_ok(path) -> bool:
    "A model argument that names an existing path, or looks like a hub name."
    from finetune_kit.rerank import _hub_name
    return path is None or Path(path).exists() or _hub_name(str(path))

def cmd_finetune_reranker(a):
    from finetune_kit.rerank import finetune_reranker, load_pairs, check_has_negatives
    try:
        train = load_pairs(a.train) if a.train.suffix == '.jsonl' else check_has_negatives(QADataset.from_json(a.train), str(a.train))
        val = QADataset.from_json(a.val) if a.val else None          # every input is checked before training starts
    except DatasetError as e: sys.exit(f"error: {e}")
    for flag, v in (('--model', a.model), ('--retriever', a.retriever)):
        if not _model_arg_ok(v): sys.exit(f"error: {flag} {v}: no such folder")
    kw = {'learning_rate': a.lr} if a.lr else {}
    llm = None
    if a.llm:
        from finetune_kit.llm import get_llm
        llm = get_llm(a.llm, base_url=a.base_url)
    t = time.time()
    finetune_reranker(train, a.out, model=a.model, retriever=a.retriever, negatives=a.negatives, llm=llm, epochs=a.epochs,
                      batch_size=a.batch_size, max_length=a.max_length, **kw)
    info = json.loads((Path(a.out)/'finetune_kit.json').read_text())
    print(f"saved fine-tuned reranker to {a.out}: {info['pairs']} pairs ({info['positives']} positives, "
          f"{info['negatives']} negatives), {info['steps']} steps, {time.time() - t:.0f} s")
    if val:
        from finetune_kit.rerank import compare_rerankers
        from finetune_kit.retrieval import compare
        print(compare(compare_rerankers(val, {'+ fine-tuned reranker': a.out}, retriever=a.retriever)).to_string())

def _eval_reranked(ds, a):
    "Retrieve with `_encoder(a)`, reorder the top `--rerank-top-k` with `--reranker`, score; throughput on stderr."
    from finetune_kit.rerank import Reranker, retrieve, check_reranker_path, NotACrossEncoder
    from finetune_kit.retrieval import score_rankings
    try: check_reranker_path(a.reranker)
    except NotACrossEncoder as e: sys.exit(f"error: {e}")
    rankings = retrieve(ds, _encoder(a), k=max(a.rerank_top_k, a.top_k, 10))
    rr = Reranker(a.reranker, top_k=a.rerank_top_k)
    t = time.perf_counter(); reranked = rr.rerank_rankings(ds, rankings); dt = time.perf_counter() - t
    n = sum(min(len(r), a.rerank_top_k) for r in rankings.values())
    print(f"reranked {n} pairs in {dt:.1f} s ({n / max(dt, 1e-9):.1f} pairs/s)", file=sys.stderr)
    return score_rankings(ds, reranked)

# %% [markdown]
# ## `ftk finetune-adapter`
#
# An adapter over a frozen base model (a local one, or `--model openai:MODEL` with `--base-url`
# for any OpenAI-compatible embeddings server). Each distinct text is embedded once into
# `--cache` (default: `OUT/embeddings.sqlite`); give a second run the same cache and it embeds nothing.
# `ftk eval-retrieval --adapter DIR` scores the result with the same JSON as without.

# %%
#| export
def cmd_finetune_adapter(a):
    from finetune_kit.adapter import finetune_adapter, AdapterError
    train = _load(a.train)
    val = _load(a.val) if a.val else None
    t = time.time()
    try: enc = finetune_adapter(train, a.out, embedder=a.model, adapter=a.adapter, transform=a.transform, epochs=a.epochs,
                                batch_size=a.batch_size, learning_rate=a.lr, cache=a.cache, base_url=a.base_url)
    except (AdapterError, ValueError) as e: sys.exit(f"error: {e}")
    info = json.loads((Path(a.out)/'finetune_kit.json').read_text())
    print(f"saved {a.adapter} adapter to {a.out} ({time.time() - t:.0f} s: {info['embed_s']:.0f} s embedding, "
          f"{info['train_s']:.0f} s training, {info['steps']} steps)")
    if val:
        from finetune_kit.retrieval import evaluate_retrieval, compare
        from finetune_kit.adapter import AdapterEncoder
        res = {'base': evaluate_retrieval(val, AdapterEncoder(enc.embedder)), 'adapter': evaluate_retrieval(val, enc)}
        print(compare(res).to_string())

# %% [markdown]
# ## `ftk finetune-router` and `ftk route`
#
# `CHOICES.json` is a list of `{"name", "description"}`, `QUERIES.json` a list of
# `{"query", "choice"}` (or of plain strings, to route unlabelled queries). `route --json`
# ends with one line of JSON: every query's routes, and with labels, `match_rate`.
# `--router` is a folder from `finetune-router`, or any embedding model with `--choices`.

# %%
#| export
def _router_input(fn, *args, **kw):
    from finetune_kit.router import RouterDataError
    try: return fn(*args, **kw)
    except RouterDataError as e: sys.exit(f"error: {e}")

def cmd_finetune_router(a):
    from finetune_kit.router import load_choices, load_queries, finetune_router
    choices = _router_input(load_choices, a.choices)
    train = _router_input(load_queries, a.train, choices, labelled=True)     # both checked before any model loads
    t = time.time()
    kw = {k: v for k, v in dict(epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.lr).items() if v is not None}
    finetune_router(choices, train, a.out, model=a.model, **kw)
    print(f"saved router ({len(choices)} choices, {len(train)} training queries) to {a.out} ({time.time() - t:.0f} s)")

def cmd_route(a):
    from finetune_kit.router import Router, load_choices, load_queries, evaluate_router
    choices = _router_input(load_choices, a.choices) if a.choices else None
    if choices is None and not (Path(a.router)/'router.json').exists():
        sys.exit(f"error: {a.router}: no router.json (a plain embedding model?): pass --choices CHOICES.json")
    queries = _router_input(load_queries, a.queries, choices)
    router = Router.load(a.router, choices)
    if choices is None: queries = _router_input(load_queries, a.queries, router.choices)
    routes = router.route([q['query'] for q in queries], top_n=max(a.top_n, 3))
    rows = [{'query': q['query'], **({'choice': q['choice']} if 'choice' in q else {}),
             'routes': [[c, round(s, 4)] for c, s in r[:a.top_n]]} for q, r in zip(queries, routes)]
    out = {'n_queries': len(queries)}
    lab = [i for i, q in enumerate(queries) if 'choice' in q]
    if lab:
        res = evaluate_router(router, [queries[i] for i in lab], routes=[routes[i] for i in lab])
        out.update({k: round(v, 4) if isinstance(v, float) else v for k, v in res.metrics.items() if k != 'n_queries'}, n_labelled=len(lab))
    if not a.json:
        for r in rows: print(f"{r['routes'][0][0]}\t{r['routes'][0][1]:.3f}\t{r['query']}")
        for k, v in out.items(): print(f"{k:>12}  {v}")
    else: print(json.dumps({**out, 'routes': rows}, ensure_ascii=False))

# %% [markdown]
# ## `ftk quickstart`
#
# The whole workflow on a corpus every machine has, Python's own documentation: chunk it,
# have the bundled SmolLM2 write a question per chunk, split by topic (whole documents go to
# train or validation), fine-tune MiniLM, and compare before and after. It writes
# `report.md`, a chart and the datasets to `--out`. Run again with the same `--out`, it
# reuses what is done.

# %%
#| export
def quickstart(out: str | Path = 'ftk_quickstart', max_chunks: int = 300, epochs: int = 3, batch_size: int = 16,
               seed: int = 0, llm: str = 'local', show_progress: bool = True) -> dict:
    "Python docs -> synthetic questions -> split by topic -> fine-tune MiniLM -> before/after report."
    from finetune_kit.llm import get_llm
    from finetune_kit.synth import generate_questions, qa_dataset
    from finetune_kit.embed_ft import finetune_embeddings
    from finetune_kit.retrieval import evaluate_retrieval, compare, plot_comparison, markdown_table
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    t0, times = time.time(), {}
    nodes = make_nodes(python_docs(), max_words=120)
    nodes = sorted(random.Random(seed).sample(nodes, min(max_chunks, len(nodes))), key=lambda n: n.id)
    print(f"[1/4] {len(nodes)} chunks of Python's documentation; asking {llm} for questions", flush=True)
    rows = generate_questions(nodes, get_llm(llm), out/'questions.jsonl', show_progress=show_progress)
    ds = qa_dataset(nodes, rows); times['questions'] = time.time() - t0
    train, val = split_by_doc(ds, val_frac=0.4, seed=seed, group=lambda nid: nid.rsplit('#', 1)[0])
    train.save_json(out/'train.json'); val.save_json(out/'val.json')
    print(f"[2/4] {len(ds)} questions; train {len(train)} / val {len(val)} (split by topic)", flush=True)
    t = time.time()
    finetune_embeddings(train, out/'model', epochs=epochs, batch_size=batch_size, show_progress=show_progress, seed=seed)
    times['fine-tune'] = time.time() - t
    print(f"[3/4] fine-tuned MiniLM in {times['fine-tune']:.0f} s -> {out/'model'}", flush=True)
    t = time.time()
    res = {'base MiniLM': evaluate_retrieval(val), 'fine-tuned': evaluate_retrieval(val, out/'model')}
    times['evaluation'] = time.time() - t
    table = compare(res)
    plot_comparison(res, out/'retrieval.png', title=f'Python docs, {len(val)} held-out questions')
    times['total'] = time.time() - t0
    report = (f"# finetune_kit quickstart\n\nCorpus: Python documentation topics, {len(nodes)} chunks. "
              f"Questions: {llm} LLM, {len(ds)} usable ({sum('skipped' in r for r in rows)} chunks skipped). "
              f"Split by topic: {len(train)} training / {len(val)} validation questions, "
              f"validation corpus {len(val.corpus)} chunks.\n\n{markdown_table(table)}\n\n![retrieval](retrieval.png)\n\n"
              f"Times (s): " + ', '.join(f"{k} {v:.0f}" for k, v in times.items()) + "\n")
    (out/'report.md').write_text(report)
    print(f"[4/4] report: {out/'report.md'}\n\n{table.to_string()}")
    return {'table': table, 'results': res, 'times': times, 'train': train, 'val': val}

def cmd_quickstart(a):
    quickstart(a.out, max_chunks=a.max_chunks, epochs=a.epochs, llm=a.llm)

# %% [markdown]
# ## The parser

# %%
#| export
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ftk', description='finetune_kit: fine-tune the learned parts of a RAG system.')
    sub = p.add_subparsers(dest='command', required=True)

    g = sub.add_parser('generate-qa', help='synthetic (question, chunk) pairs from documents, with an LLM')
    g.add_argument('--docs', nargs='+', required=True, help='text/markdown files or folders')
    g.add_argument('--out', required=True, type=Path, help='QADataset JSON to write')
    g.add_argument('--llm', default='local', help="'local' (bundled SmolLM2), 'local:PATH' or 'openai:MODEL'")
    g.add_argument('--base-url', default=None, help='OpenAI-compatible server URL (key from OPENAI_API_KEY)')
    g.add_argument('--questions-per-chunk', type=int, default=1)
    g.add_argument('--concurrency', type=int, default=8, help='parallel requests (openai backend)')
    g.add_argument('--chunk-words', type=int, default=160)
    g.add_argument('--max-chunks', type=int, default=None)
    g.add_argument('--batch-size', type=int, default=32, help='chunks per progress write')
    g.set_defaults(func=cmd_generate_qa)

    f = sub.add_parser('finetune-embeddings', help='fine-tune a sentence-transformers model on a QADataset')
    f.add_argument('--train', required=True, type=Path)
    f.add_argument('--val', type=Path, default=None)
    f.add_argument('--model', default=None, help='base model path or name (default: bundled MiniLM)')
    f.add_argument('--out', required=True, type=Path)
    f.add_argument('--epochs', type=int, default=2)
    f.add_argument('--batch-size', type=int, default=32)
    f.add_argument('--hard-negatives', type=int, default=0)
    f.add_argument('--lr', type=float, default=1e-4)
    f.add_argument('--max-seq-length', type=int, default=256)
    f.set_defaults(func=cmd_finetune_embeddings)

    e = sub.add_parser('eval-retrieval', help='hit@k, MRR@10, NDCG@10 of a model on a QADataset')
    e.add_argument('--data', required=True, type=Path)
    e.add_argument('--model', default=None, help='model path or folder (default: bundled MiniLM)')
    e.add_argument('--top-k', type=int, default=10)
    e.add_argument('--json', action='store_true', help='end with one line of JSON')
    e.add_argument('--reranker', default=None, help='a cross-encoder folder: rerank the retrieved top candidates with it')
    e.add_argument('--rerank-top-k', type=int, default=20, help='how many retrieved candidates the reranker reorders')
    e.add_argument('--adapter', default=None, help='adapter folder from finetune-adapter (or LlamaIndex) to apply over --model')
    e.add_argument('--base-url', default=None, help="OpenAI-compatible server for --model openai:MODEL")
    e.add_argument('--cache', default=None, help='embedding cache file (SQLite) for adapters and openai: models')
    e.set_defaults(func=cmd_eval_retrieval)

    ad = sub.add_parser('finetune-adapter', help='train an adapter over a frozen (even API-only) embedding model')
    ad.add_argument('--train', required=True, type=Path)
    ad.add_argument('--val', type=Path, default=None, help='also score base and adapter on this QADataset')
    ad.add_argument('--out', required=True, type=Path)
    ad.add_argument('--model', default=None, help="base model path, or 'openai:MODEL' (default: bundled MiniLM)")
    ad.add_argument('--base-url', default=None, help='OpenAI-compatible embeddings server (key from OPENAI_API_KEY)')
    ad.add_argument('--adapter', choices=['linear', 'two-layer'], default='linear')
    ad.add_argument('--transform', choices=['query', 'both'], default='query', help='which side goes through the adapter')
    ad.add_argument('--epochs', type=int, default=None, help='default: 8 (linear), 25 (two-layer)')
    ad.add_argument('--batch-size', type=int, default=32)
    ad.add_argument('--lr', type=float, default=None, help='default 1e-3')
    ad.add_argument('--cache', default=None, help='embedding cache file (default: OUT/embeddings.sqlite)')
    ad.set_defaults(func=cmd_finetune_adapter)

    fr = sub.add_parser('finetune-router', help='fine-tune an embedding router: queries land nearest their choice')
    fr.add_argument('--choices', required=True, type=Path, help='JSON list of {"name", "description"}')
    fr.add_argument('--train', required=True, type=Path, help='JSON list of {"query", "choice"}')
    fr.add_argument('--out', required=True, type=Path)
    fr.add_argument('--model', default=None, help='base model path or name (default: bundled MiniLM)')
    fr.add_argument('--epochs', type=int, default=None, help='default: 2')
    fr.add_argument('--batch-size', type=int, default=None, help='default: 32')
    fr.add_argument('--lr', type=float, default=None, help='default: 2e-4')
    fr.set_defaults(func=cmd_finetune_router)

    ro = sub.add_parser('route', help='route queries with a router (or a plain embedding model and --choices)')
    ro.add_argument('--router', required=True, help='folder from finetune-router, or an embedding model path')
    ro.add_argument('--queries', required=True, type=Path, help='JSON list of {"query", "choice"?} or of strings')
    ro.add_argument('--choices', type=Path, default=None, help='JSON list of {"name", "description"} (needed for a plain model)')
    ro.add_argument('--top-n', type=int, default=1)
    ro.add_argument('--json', action='store_true', help='end with one line of JSON')
    ro.set_defaults(func=cmd_route)

    r = sub.add_parser('finetune-reranker', help='fine-tune a cross-encoder reranker on a QADataset (mined hard negatives) or labelled pairs')
    r.add_argument('--train', required=True, type=Path, help='QADataset JSON, or JSONL of {query, passage, label} pairs')
    r.add_argument('--val', type=Path, default=None, help='QADataset JSON: compare retrieval with and without the reranker')
    r.add_argument('--out', required=True, type=Path)
    r.add_argument('--model', default=None, help='base cross-encoder, or any model folder to put a new head on (default: bundled MiniLM)')
    r.add_argument('--retriever', default=None, help='embedding model that mines hard negatives (and retrieves for --val); default: bundled MiniLM')
    r.add_argument('--negatives', type=int, default=4, help='hard negatives per query')
    r.add_argument('--llm', default=None, help="label the mined pairs with an LLM instead: 'local' or 'openai:MODEL'")
    r.add_argument('--base-url', default=None, help='OpenAI-compatible server URL for --llm')
    r.add_argument('--epochs', type=int, default=1)
    r.add_argument('--batch-size', type=int, default=16)
    r.add_argument('--lr', type=float, default=None, help='learning rate (default: the library default)')
    r.add_argument('--max-length', type=int, default=256, help='max tokens of question + passage')
    r.set_defaults(func=cmd_finetune_reranker)

    q = sub.add_parser('quickstart', help='the whole embedding workflow on Python docs, offline')
    q.add_argument('--out', default='ftk_quickstart')
    q.add_argument('--max-chunks', type=int, default=300)
    q.add_argument('--epochs', type=int, default=3)
    q.add_argument('--llm', default='local')
    q.set_defaults(func=cmd_quickstart)
    return p

def main(argv: list[str] | None = None):
    "Entry point of the `ftk` console script."
    a = build_parser().parse_args(argv)
    a.func(a)

# %% [markdown]
# ## Trying it
#
# The commands run here in-process through `main`, exactly as the console script runs them.
# First `eval-retrieval` on a real slice (SQuAD-Shifts Reddit), whose last line is JSON:

# %%
import io, contextlib
tmp = Path(tempfile.mkdtemp())
train, val = split_by_doc(load_squad('data/reddit_slice.json'), val_frac=0.5, seed=0)
val.save_json(tmp/'val.json'); sample_queries(train, 96, seed=0).save_json(tmp/'train.json')

def run_cli(*args) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): main([str(a) for a in args])
    return buf.getvalue()

out = run_cli('eval-retrieval', '--data', tmp/'val.json', '--json')
base = json.loads(out.strip().splitlines()[-1])
test_eq(set(base), {'hit@1', 'hit@5', 'hit@10', 'mrr@10', 'ndcg@10', 'n_queries'})
test_eq(base['n_queries'], len(val))
base

# %% [markdown]
# A bad training file stops before any model is loaded, naming the file and the field:

# %%
d = json.loads((tmp/'train.json').read_text())
q0 = next(iter(d['relevant_docs'])); d['relevant_docs'][q0] = ['no-such-paragraph']
(tmp/'bad.json').write_text(json.dumps(d))
try: main(['finetune-embeddings', '--train', str(tmp/'bad.json'), '--out', str(tmp/'never')]); raise AssertionError('no error')
except SystemExit as e: msg = str(e)
print(msg)
assert 'bad.json' in msg and "'relevant_docs'" in msg and 'no-such-paragraph' in msg
assert not (tmp/'never').exists()                     # nothing half-written
(tmp/'broken.json').write_text('{"queries": {')
try: main(['eval-retrieval', '--data', str(tmp/'broken.json'), '--json']); raise AssertionError('no error')
except SystemExit as e: assert 'broken.json: not valid JSON' in str(e)

# %% [markdown]
# `finetune-embeddings` writes a folder that loads with `SentenceTransformer(DIR)`:

# %%
from sentence_transformers import SentenceTransformer
print(run_cli('finetune-embeddings', '--train', tmp/'train.json', '--out', tmp/'model', '--epochs', '1', '--batch-size', '16'))
m = SentenceTransformer(str(tmp/'model'))
test_eq(m.encode(['hello']).shape, (1, 384))
assert not (tmp/'model'/'checkpoints').exists()       # checkpoints are removed once the model is saved
after = json.loads(run_cli('eval-retrieval', '--data', tmp/'val.json', '--model', tmp/'model', '--json').splitlines()[-1])
after

# %% [markdown]
# `finetune-reranker` trains a cross-encoder on the same training file (96 questions here, 2 mined
# hard negatives each, short inputs to keep the test fast), and `eval-retrieval --reranker` scores
# retrieval with the top candidates reordered by it, with the same JSON keys:

# %%
from finetune_kit.rerank import is_cross_encoder, load_pairs, save_pairs
print(run_cli('finetune-reranker', '--train', tmp/'train.json', '--out', tmp/'reranker', '--negatives', '2', '--max-length', '128'))
assert is_cross_encoder(tmp/'reranker') and not (tmp/'reranker'/'checkpoints').exists()
test_eq(len(load_pairs(tmp/'reranker'/'pairs.jsonl')), 96 * 3)
sample_queries(val, 60, seed=0).save_json(tmp/'val60.json')
reranked = json.loads(run_cli('eval-retrieval', '--data', tmp/'val60.json', '--reranker', tmp/'reranker', '--rerank-top-k', '5', '--json').splitlines()[-1])
test_eq(set(reranked), set(base)); test_eq(reranked['n_queries'], 60)
reranked

# %% [markdown]
# Pairs that cannot teach a reranker anything, and a reranker folder that holds something else
# (here the embedding model just trained), stop with a message before any model is loaded:

# %%
save_pairs([p for p in load_pairs(tmp/'reranker'/'pairs.jsonl') if p['label'] == 1], tmp/'positives.jsonl')
try: main(['finetune-reranker', '--train', str(tmp/'positives.jsonl'), '--out', str(tmp/'never')]); raise AssertionError('no error')
except SystemExit as e: msg = str(e)
print(msg)
assert 'positives.jsonl' in msg and 'no negatives' in msg and not (tmp/'never').exists()
try: main(['eval-retrieval', '--data', str(tmp/'val60.json'), '--reranker', str(tmp/'model'), '--json']); raise AssertionError('no error')
except SystemExit as e: msg = str(e)
print(msg)
assert 'holds no cross-encoder' in msg and 'embedding model' in msg

# %% [markdown]
# `finetune-adapter` trains an adapter over the frozen MiniLM, and `eval-retrieval --adapter`
# scores it with the same JSON keys. An adapter made for another base model stops with a message:

# %%
print(run_cli('finetune-adapter', '--train', tmp/'train.json', '--out', tmp/'adapter', '--epochs', '4', '--batch-size', '16'))
test_eq(sorted(p.name for p in (tmp/'adapter').iterdir()), ['config.json', 'embeddings.sqlite', 'finetune_kit.json', 'pytorch_model.bin'])
adapted = json.loads(run_cli('eval-retrieval', '--data', tmp/'val.json', '--adapter', tmp/'adapter', '--json').splitlines()[-1])
test_eq(set(adapted), set(base)); test_eq(adapted['n_queries'], base['n_queries'])
(tmp/'wide').mkdir(); (tmp/'wide'/'config.json').write_text('{"in_features": 768, "out_features": 768, "bias": false}')
import torch; torch.save({'linear.weight': torch.eye(768)}, tmp/'wide'/'pytorch_model.bin')
try: main(['eval-retrieval', '--data', str(tmp/'val.json'), '--adapter', str(tmp/'wide'), '--json']); raise AssertionError('no error')
except SystemExit as e: assert 'expects 768-d embeddings, but the base model gives 384-d' in str(e), e
adapted

# %% [markdown]
# `finetune-router` and `route`, on the 48 Wikipedia articles of notebook 12 (a small sample
# here): `--router` takes the fine-tuned folder, or the base model with `--choices`. A label
# that names no choice stops before any model loads.

# %%
from finetune_kit.router import squad_routing_task
from dataclasses import asdict
choices, rtrain, rval = squad_routing_task('data/squaddev_slice.json')
(tmp/'choices.json').write_text(json.dumps([asdict(c) for c in choices]))
(tmp/'rtrain.json').write_text(json.dumps(random.Random(0).sample(rtrain, 192)))
(tmp/'rval.json').write_text(json.dumps(random.Random(0).sample(rval, 100)))
print(run_cli('finetune-router', '--choices', tmp/'choices.json', '--train', tmp/'rtrain.json', '--out', tmp/'router'))
routed = json.loads(run_cli('route', '--router', tmp/'router', '--queries', tmp/'rval.json', '--json').splitlines()[-1])
from finetune_kit.models import minilm_path
plain = json.loads(run_cli('route', '--router', minilm_path(), '--choices', tmp/'choices.json', '--queries', tmp/'rval.json', '--json').splitlines()[-1])
test_eq((routed['n_queries'], plain['n_queries']), (100, 100))
print({'base': plain['match_rate'], 'fine-tuned': routed['match_rate']})
test_eq(len(routed['routes']), 100); test_eq(routed['routes'][0]['query'], json.loads((tmp/'rval.json').read_text())[0]['query'])
(tmp/'rbad.json').write_text(json.dumps([{'query': 'Who won?', 'choice': 'Super Bowl 51'}]))
try: main(['finetune-router', '--choices', str(tmp/'choices.json'), '--train', str(tmp/'rbad.json'), '--out', str(tmp/'never')]); raise AssertionError('no error')
except SystemExit as e: assert "rbad.json: query 0 ('Who won?') is labelled 'Super Bowl 51', which names no choice" in str(e), e
assert not (tmp/'never').exists()
try: main(['route', '--router', str(minilm_path()), '--queries', str(tmp/'rval.json')]); raise AssertionError('no error')
except SystemExit as e: assert 'pass --choices' in str(e)

# %% [markdown]
# ### Killing `generate-qa` midway, then running it again
#
# A real process, killed with SIGKILL as soon as it has written its first batch: the second
# run finishes the job, and every chunk appears exactly once.

# %%
docs = tmp/'docs'; docs.mkdir()
topics = python_docs()
for name in ['assert', 'pass', 'del', 'return', 'yield', 'raise']: (docs/f'{name}.md').write_text(topics[name])
cmd = ['ftk', 'generate-qa', '--docs', str(docs), '--out', str(tmp/'qa.json'), '--batch-size', '2', '--chunk-words', '80']
progress = tmp/'qa.json.progress.jsonl'
proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(600):
    if read_jsonl(progress) or proc.poll() is not None: break
    time.sleep(0.5)
proc.send_signal(signal.SIGKILL); proc.wait()
partial = read_jsonl(progress)
n_nodes = len(make_nodes(load_documents(docs), max_words=80))
print(f'killed after {len(partial)} of {n_nodes} chunks')
assert 0 < len(partial) < n_nodes and not (tmp/'qa.json').exists()
r = subprocess.run(cmd, capture_output=True, text=True); print(r.stdout)
test_eq(r.returncode, 0)
rows = read_jsonl(progress)
ids = [r['node_id'] for r in rows]
test_eq(len(ids), n_nodes); test_eq(len(set(ids)), n_nodes)          # none lost, none duplicated
test_eq(rows[:len(partial)], partial)                                  # the first run's work is kept
qa = QADataset.from_json(tmp/'qa.json')
test_eq(len(qa.corpus), n_nodes); assert len(qa) >= n_nodes // 2

# %% [markdown]
# ### Against an OpenAI-compatible server
#
# `--llm openai:MODEL --base-url URL` talks to any OpenAI-compatible server. Here it is a real
# HTTP server on localhost standing in for the remote API (these machines cannot reach
# OpenAI); the key comes from `OPENAI_API_KEY` and appears in no output and no file.

# %%
from finetune_kit.llm import MockChatServer
def ask_about(msgs):       # the server's "model": a question about the longest word of the passage
    ctx = msgs[-1]['content'].split('---------------------')[1]
    return f"What is {max(re.findall('[A-Za-z]+', ctx), key=len)}?"
srv = MockChatServer(reply=ask_about, delay=0.05)
secret = 'sk-test-DO-NOT-LEAK-42'
os.environ['OPENAI_API_KEY'] = secret
err = io.StringIO()
with contextlib.redirect_stderr(err):
    out = run_cli('generate-qa', '--docs', docs, '--out', tmp/'qa_api.json', '--llm', 'openai:test-model',
                  '--base-url', srv.url, '--concurrency', '4', '--chunk-words', '80')
del os.environ['OPENAI_API_KEY']
print(out)
qa = QADataset.from_json(tmp/'qa_api.json')
test_eq(len(qa), n_nodes)                                            # one question per chunk
assert all(f'Bearer {secret}' == a for a in srv.auth) and 1 < srv.max_in_flight <= 4
for text in [out, err.getvalue(), (tmp/'qa_api.json').read_text(), Path(str(tmp/'qa_api.json') + '.progress.jsonl').read_text()]:
    assert secret not in text
srv.close()

# %% [markdown]
# ### The quickstart
#
# A small twin runs in every test; the full run (about ten minutes on a 2-core CPU) carries the `slow` flag.

# %%
res = quickstart(tmp/'qs', max_chunks=40, epochs=1, show_progress=False)
assert (tmp/'qs'/'report.md').exists() and (tmp/'qs'/'retrieval.png').stat().st_size > 10_000
test_eq(set(res['table'].index[:2]), {'base MiniLM', 'fine-tuned'})

# %%
#| slow
res = quickstart('ftk_quickstart')
print(res['times'])
assert res['table'].loc['Δ fine-tuned', 'hit@5'] > 0
