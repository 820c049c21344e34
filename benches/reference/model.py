"""The Tessera model, layer for layer, in PyTorch (CPU): the reference Tessera's speed is judged against.

Mirrors src/model/transformer.rs and src/model/objectives.rs exactly: parameter names, shapes, initialisation
scheme, RMSNorm pre-norm blocks, fused qkv Linear (bias or not, as Tessera's weights have it), tanh-approximated GELU MLP (candle's `gelu`), learned
patch and token positions, prefix attention mask (bidirectional over the image patches, causal after them), pixel
head and token head, and the three losses. Attention is written out (q k^T, mask, softmax, @ v) like Tessera's, which
is also what torch 1.13 (Debian bookworm) users run: it has no fused scaled_dot_product_attention.
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

INIT_STD = 0.02
# Special tokens (src/model/vocab.rs).
EOS, TASK_CLASSIFY, TASK_DETECT, NOISE, N_SPECIAL = 0, 1, 2, 3, 4
# Std-dev, in bins, of the Gaussian soft target of coordinate tokens (objectives.rs COORD_SIGMA_BINS).
COORD_SIGMA_BINS = 1.0


def preset(name):
    """src/model/config.rs ModelConfig::preset."""
    base = dict(preset=name, image_size=64, patch_size=8, channels=3, dim=128, n_layers=4, n_heads=4, mlp_ratio=2,
                n_bins=64, max_objects=10, n_classes=0, norm_eps=1e-5, box_query=True)
    if name == "tiny":
        return base
    if name == "small":
        return {**base, "dim": 256, "n_layers": 6, "n_heads": 8, "mlp_ratio": 4, "image_size": 96, "n_bins": 96,
                "max_objects": 20}
    raise ValueError(f"unknown preset {name}")


class Config:
    def __init__(self, d):
        self.__dict__.update(d)
        self.grid = self.image_size // self.patch_size
        self.n_patches = self.grid * self.grid
        self.patch_dim = self.patch_size * self.patch_size * self.channels
        self.head_dim = self.dim // self.n_heads
        self.max_output_tokens = 1 + 5 * self.max_objects + 1
        self.vocab = N_SPECIAL + self.n_bins + self.n_classes
        self.first_class = N_SPECIAL + self.n_bins
        # Whether the block Linears (qkv, proj, fc1, fc2) have biases; the benchmark scripts read it off Tessera's
        # dumped weights so the reference always has exactly Tessera's parameters.
        self.block_bias = d.get("block_bias", False)
        self.positions = d.get("positions", "sincos")
        self.box_query = d.get("box_query", False)


def sincos_1d(x, dim):
    """transformer.rs sincos_1d, in f32 like Tessera."""
    half = dim // 2
    out = np.zeros(dim, np.float32)
    for i in range(half):
        freq = np.float32(1.0) / np.power(np.float32(100.0), np.float32(i) / np.float32(half))
        out[i] = np.sin(np.float32(x) * freq)
        out[half + i] = np.cos(np.float32(x) * freq)
    return out


def sincos_2d(row, col, dim):
    return np.concatenate([sincos_1d(row, dim // 2), sincos_1d(col, dim - dim // 2)])


class Linear(nn.Linear):
    def __init__(self, i, o, std, bias=True):
        super().__init__(i, o, bias=bias)
        nn.init.normal_(self.weight, 0.0, std)
        if bias:
            nn.init.zeros_(self.bias)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt().reciprocal() * self.weight


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        out_std = INIT_STD / math.sqrt(2.0 * cfg.n_layers)
        self.qkv = Linear(cfg.dim, 3 * cfg.dim, INIT_STD, cfg.block_bias)
        self.proj = Linear(cfg.dim, cfg.dim, out_std, cfg.block_bias)
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim

    def forward(self, x, mask, cache=None):
        """`cache`: (keys, values, offset) pre-allocated [B, H, capacity, hd], written in place."""
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if cache is not None:
            kc, vc, off = cache
            kc[:, :, off:off + t] = k
            vc[:, :, off:off + t] = v
            k, v = kc[:, :, :off + t], vc[:, :, :off + t]
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        if mask is not None:
            scores = scores + mask
        y = scores.softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden = cfg.dim * cfg.mlp_ratio
        self.fc1 = Linear(cfg.dim, hidden, INIT_STD, cfg.block_bias)
        self.fc2 = Linear(hidden, cfg.dim, INIT_STD / math.sqrt(2.0 * cfg.n_layers), cfg.block_bias)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = Mlp(cfg)

    def forward(self, x, mask, cache=None):
        x = x + self.attn(self.norm1(x), mask, cache)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.patch_embed = Linear(cfg.patch_dim, cfg.dim, 1.0 / math.sqrt(cfg.patch_dim))
        sincos = cfg.positions == "sincos"
        # With sine-cosine positions the learned patch positions are a residual that starts at zero.
        self.patch_pos = nn.Parameter(torch.randn(cfg.n_patches, cfg.dim) * (0.0 if sincos else INIT_STD))
        fixed_patch = fixed_token = None
        if sincos:
            g = cfg.grid
            fixed_patch = torch.from_numpy(np.stack([sincos_2d(i // g, i % g, cfg.dim) for i in range(g * g)]))
            fixed_token = torch.zeros(cfg.vocab, cfg.dim)
            for b in range(cfg.n_bins):
                x = np.float32(b) * np.float32(g) / np.float32(cfg.n_bins)
                fixed_token[N_SPECIAL + b] = torch.from_numpy(sincos_1d(x, cfg.dim))
        # Fixed (not learned) additions, as buffers.
        self.register_buffer("fixed_patch_pos", fixed_patch, persistent=False)
        self.register_buffer("fixed_token_embed", fixed_token, persistent=False)
        self.token_embed = nn.Parameter(torch.randn(cfg.vocab, cfg.dim) * INIT_STD)
        self.token_pos = nn.Parameter(torch.randn(cfg.max_output_tokens, cfg.dim) * INIT_STD)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.pixel_head = Linear(cfg.dim, cfg.patch_dim, INIT_STD)
        self.token_head = Linear(cfg.dim, cfg.vocab, INIT_STD)

    def embed(self, patches=None, tokens=None, token_offset=0):
        parts = []
        if patches is not None:
            pos = self.patch_pos if self.fixed_patch_pos is None else self.patch_pos + self.fixed_patch_pos
            parts.append(self.patch_embed(patches) + pos[: patches.shape[1]])
        if tokens is not None:
            l = tokens.shape[1]
            table = self.token_embed if self.fixed_token_embed is None else self.token_embed + self.fixed_token_embed
            parts.append(F.embedding(tokens, table) + self.token_pos[token_offset:token_offset + l])
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def forward_embedded(self, x, mask, cache=None):
        """`cache`: KvCache or None."""
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else (cache.keys[i], cache.values[i], cache.len)
            x = block(x, mask, layer_cache)
        if cache is not None:
            cache.len += x.shape[1]
        return self.norm(x)

    def forward(self, patches=None, tokens=None, mask=None):
        return self.forward_embedded(self.embed(patches, tokens, 0), mask)


class KvCache:
    def __init__(self, cfg, batch, capacity):
        shape = (batch, cfg.n_heads, capacity, cfg.head_dim)
        self.keys = [torch.zeros(shape) for _ in range(cfg.n_layers)]
        self.values = [torch.zeros(shape) for _ in range(cfg.n_layers)]
        self.len = 0


def prefix_mask(t, prefix):
    i = torch.arange(t).unsqueeze(1)
    j = torch.arange(t).unsqueeze(0)
    allowed = (j < prefix) | (j <= i)
    return torch.zeros(t, t).masked_fill(~allowed, float("-inf"))


# ---- losses (src/model/objectives.rs) ----

def normalize_patches(p):
    centered = p - p.mean(-1, keepdim=True)
    return centered / (centered.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()


def pretrain_loss(model, patches, prefix):
    n = patches.shape[1]
    prefix = min(max(prefix, 1), n - 1)
    h = model(patches, None, prefix_mask(n, prefix))
    pred = model.pixel_head(h[:, prefix - 1:n - 1])
    return (pred - normalize_patches(patches[:, prefix:])).pow(2).mean()


def classify_logits(model, patches):
    b, n, _ = patches.shape
    task = torch.full((b, 1), TASK_CLASSIFY, dtype=torch.long)
    h = model(patches, task, prefix_mask(n + 1, n))
    logits = model.token_head(h[:, n])
    return logits[:, model.cfg.first_class:model.cfg.first_class + model.cfg.n_classes]


def classify_loss(model, patches, labels):
    return F.cross_entropy(classify_logits(model, patches), labels)


def soft_targets(cfg, target):
    """objectives.rs soft_targets: one-hot, except coordinate bins get a Gaussian over nearby bins."""
    t = target.numpy()
    b, l = t.shape
    dense = np.zeros((b, l, cfg.vocab), np.float32)
    reach = int(math.ceil(3.0 * COORD_SIGMA_BINS))
    kernel = [np.float32(math.exp(-(d * d) / (2.0 * COORD_SIGMA_BINS ** 2))) for d in range(-reach, reach + 1)]
    for i in range(b):
        for j in range(l):
            tok = int(t[i, j])
            if N_SPECIAL <= tok < cfg.first_class and COORD_SIGMA_BINS > 0:
                bin_ = tok - N_SPECIAL
                ks = [(bin_ + k - reach, w) for k, w in enumerate(kernel) if 0 <= bin_ + k - reach < cfg.n_bins]
                total = np.float32(sum(w for _, w in ks))
                for bb, w in ks:
                    dense[i, j, N_SPECIAL + bb] = w / total
            else:
                dense[i, j, tok] = 1.0
    return torch.from_numpy(dense)


def box_centre_codes(cfg, inp):
    """objectives.rs box_centre_codes: on each object's xmax token (output position 5k + 4) whose four coordinates
    are bins, the 2-D sine-cosine code of the box centre in patch units."""
    t = inp.numpy()
    b, l = t.shape
    out = np.zeros((b, l, cfg.dim), np.float32)
    deq = lambda tok: np.float32(tok - N_SPECIAL) / np.float32(cfg.n_bins - 1) * np.float32(cfg.image_size)
    p = np.float32(cfg.patch_size)
    for i in range(b):
        for j in range(3, l):
            if j % 5 != 4 or not all(N_SPECIAL <= int(x) < cfg.first_class for x in t[i, j - 3:j + 1]):
                continue
            y0, x0, y1, x1 = (deq(int(x)) for x in t[i, j - 3:j + 1])
            cy = (y0 + y1) / np.float32(2.0) / p - np.float32(0.5)
            cx = (x0 + x1) / np.float32(2.0) / p - np.float32(0.5)
            out[i, j] = np.concatenate([sincos_1d(cy, cfg.dim // 2), sincos_1d(cx, cfg.dim - cfg.dim // 2)])
    return torch.from_numpy(out)


def detect_loss(model, patches, inp, target, weight):
    cfg = model.cfg
    n, l = patches.shape[1], inp.shape[1]
    x = model.embed(patches, inp, 0)
    if cfg.box_query:
        x = x + torch.cat([torch.zeros(x.shape[0], n, cfg.dim), box_centre_codes(cfg, inp)], 1)
    h = model.forward_embedded(x, prefix_mask(n + l, n))
    logits = model.token_head(h[:, n:])
    logp = F.log_softmax(logits, -1)
    nll = -(logp * soft_targets(cfg, target)).sum(-1)
    return (nll * weight).sum() / max(float(weight.sum()), 1.0)


@torch.no_grad()
def detect_decode_full(model, patches, steps, cache=True):
    """Greedy decoding of `steps` tokens after the task token, never stopping early (the worst case Tessera's
    bench also measures). With `cache`: one prefill then one token per step through a pre-allocated KV cache;
    without: the whole sequence is recomputed every step."""
    cfg = model.cfg
    b, n, _ = patches.shape
    toks = torch.full((b, 1), TASK_DETECT, dtype=torch.long)
    if cache:
        kv = KvCache(cfg, b, n + cfg.max_output_tokens)
        h = model.forward_embedded(model.embed(patches, toks, 0), prefix_mask(n + 1, n), kv)
    else:
        h = model(patches, toks, prefix_mask(n + 1, n))
    for step in range(steps):
        logits = model.token_head(h[:, -1])
        logits[:, EOS] = float("-inf")
        nxt = logits.argmax(-1, keepdim=True)
        toks = torch.cat([toks, nxt], 1)
        if step + 1 == steps:
            break
        if cache:
            x = model.embed(None, nxt, toks.shape[1] - 1)
            h = model.forward_embedded(x, None, kv)
        else:
            l = toks.shape[1]
            h = model(patches, toks, prefix_mask(n + l, n))
    return toks


def make_optimizer(model, lr, weight_decay):
    """AdamW as Tessera's (src/train/optim.rs): betas (0.9, 0.95), eps 1e-8, decay on matrices only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), eps=1e-8)


# ---- a tiny safetensors reader (the `safetensors` Python package is not in Debian bookworm) ----

_DTYPES = {"F32": np.float32, "F64": np.float64, "U32": np.uint32, "I64": np.int64, "U8": np.uint8, "F16": np.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = arr.astype(np.int64) if arr.dtype == np.uint32 else arr.copy()
    return out
