#!/usr/bin/env python3
"""Independent reference for mypt checkpoints (core/checkpoint).

Implements the safetensors layout from its published description with
numpy + json + struct (Debian has no python3-safetensors) and uses PyTorch
for bfloat16 rounding and numpy for float16 rounding.

  reference.py fixtures OUTDIR      write the committed fixtures
  reference.py check DIR [--against F32DIR]
                                    validate a checkpoint written by the Go
                                    writer, print its tensors as JSON bits;
                                    with --against, also require every stored
                                    tensor to equal torch's conversion of the
                                    same tensor in F32DIR to the stored dtype
  reference.py mypt-pt OUTDIR       write a tiny MyPT-style model.pt (for a
                                    future importer; not used by the tests)
"""
import json
import os
import struct
import sys
import zlib

import numpy as np
import torch

DTYPES = {"F32": (np.float32, np.uint32, 4), "BF16": (None, np.uint16, 2),
          "F16": (np.float16, np.uint16, 2), "F64": (np.float64, np.uint64, 8)}


def tiny_gpt_params(tied):
    """MyPT state_dict names and shapes of a 1-layer GPT-2-style model."""
    V, C, T, H = 16, 8, 4, 32
    p = [("token_embedding_table.weight", [V, C]),
         ("position_embedding_table.weight", [T, C]),
         ("blocks.0.ln1.weight", [C]), ("blocks.0.ln1.bias", [C]),
         ("blocks.0.sa.qkv.weight", [3 * C, C]),
         ("blocks.0.sa.proj.weight", [C, C]),
         ("blocks.0.ln2.weight", [C]), ("blocks.0.ln2.bias", [C]),
         ("blocks.0.fwd.net.0.weight", [H, C]), ("blocks.0.fwd.net.0.bias", [H]),
         ("blocks.0.fwd.net.2.weight", [C, H]), ("blocks.0.fwd.net.2.bias", [C]),
         ("ln_f.weight", [C]), ("ln_f.bias", [C])]
    if not tied:
        p.append(("lm_head.weight", [V, C]))
    p.append(("lm_head.bias", [V]))
    return p


def raw_bits(t):
    """Little-endian bytes and integer bit patterns of a torch tensor."""
    if t.dtype == torch.bfloat16:
        u = t.view(torch.int16).numpy().astype(np.uint16)
    elif t.dtype == torch.float16:
        u = t.view(torch.int16).numpy().astype(np.uint16)
    elif t.dtype == torch.float32:
        u = t.view(torch.int32).numpy().astype(np.uint32)
    else:
        u = t.view(torch.int64).numpy().astype(np.uint64)
    u = np.ascontiguousarray(u.reshape(-1)).astype(u.dtype.newbyteorder("<"))
    return u.tobytes(), [int(x) for x in u]


DT_NAME = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64"}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, torch tensor). Data is laid out in the given
    order; the header lists them sorted by name with metadata last, so a
    reader cannot rely on header order matching data order."""
    header, blobs, off, sums = {}, [], 0, {}
    for name, t in tensors:
        data, _ = raw_bits(t)
        header[name] = {"dtype": DT_NAME[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        sums[name] = zlib.crc32(data)
        off += len(data)
    ordered = {k: header[k] for k in sorted(header)}
    ordered["__metadata__"] = metadata
    hj = json.dumps(ordered).encode()
    hj += b" " * (-len(hj) % 8)
    head = struct.pack("<Q", len(hj)) + hj
    with open(path, "wb") as f:
        f.write(head)
        for b in blobs:
            f.write(b)
    return {"size": len(head) + off, "header_crc32": zlib.crc32(head), "tensor_crc32": sums}


def write_json(path, obj):
    data = (json.dumps(obj, indent=2) + "\n").encode()
    with open(path, "wb") as f:
        f.write(data)
    return {"size": len(data), "crc32": zlib.crc32(data)}


def write_checkpoint(d, tied, dtype, moments, step):
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(1234 + step)
    params = [(n, torch.randn(s, generator=g, dtype=torch.float32).to(dtype)) for n, s in tiny_gpt_params(tied)]
    man = {"format": "mypt-checkpoint", "format_version": 1, "files": {}, "safetensors": {}}
    expected = {}
    # data order: reverse of the model order, to differ from header order too
    man["safetensors"]["model.safetensors"] = write_safetensors(
        os.path.join(d, "model.safetensors"), list(reversed(params)),
        {"format": "pt", "tie_weights": "true" if tied else "false"})
    for n, t in params:
        expected["param:" + n] = {"dtype": DT_NAME[t.dtype], "shape": list(t.shape), "bits": raw_bits(t)[1]}
    if moments:
        mom = []
        for n, s in tiny_gpt_params(tied):
            m = torch.randn(s, generator=g) * 1e-3
            v = torch.rand(s, generator=g) * 1e-6
            mom += [("exp_avg." + n, m.to(dtype)), ("exp_avg_sq." + n, v.to(dtype))]
        man["safetensors"]["optimizer.safetensors"] = write_safetensors(
            os.path.join(d, "optimizer.safetensors"), mom, {"format": "pt"})
        for n, t in mom:
            expected["moment:" + n] = {"dtype": DT_NAME[t.dtype], "shape": list(t.shape), "bits": raw_bits(t)[1]}
    config = {"batch_size": 2, "block_size": 4, "vocab_size": 16, "n_embd": 8, "n_head": 2, "n_layer": 1,
              "dropout": 0.0, "bias": True, "tie_weights": tied, "pos_encoding": "learned",
              "mlp_type": "gelu", "norm_type": "layernorm"}
    man["files"]["config.json"] = write_json(os.path.join(d, "config.json"), config)
    man["files"]["tokenizer.json"] = write_json(os.path.join(d, "tokenizer.json"),
                                                {"token_kind": "gpt2", "chars": None, "base_vocab_size": 50257})
    man["files"]["training_state.json"] = write_json(os.path.join(d, "training_state.json"), {
        "format_version": 1, "optimizer_steps": step if moments else 0, "step": step,
        "training_config": {"learning_rate": 3e-4, "max_iters": 100}, "best_val_loss": 2.5})
    write_json(os.path.join(d, "manifest.json"), man)
    with open(os.path.join(d, "..", os.path.basename(d) + ".expected.json"), "w") as f:
        json.dump({"optimizer_steps": step if moments else 0, "tie_weights": tied, "tensors": expected}, f)


def dtype_cases(path):
    """f32 bit patterns with torch's bf16 and numpy's/torch's f16 rounding."""
    special = [0x00000000, 0x80000000, 0x3F800000, 0xBF800000, 0x7F800000, 0xFF800000,
               0x7FC00000, 0xFFC00001, 0x7F800001,                 # NaNs (quiet, negative, signalling)
               0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F807FFF,     # bf16 ties (even down / up) and neighbours
               0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF,                 # bf16 overflow to Inf and not
               0x00000001, 0x807FFFFF, 0x00800000,                 # f32 subnormals, smallest normal
               0x477FE000, 0x477FEFFF, 0x477FF000, 0x47800000,     # f16 max, just below / at overflow tie
               0x38800000, 0x387FC000, 0x33800000, 0x33000000,     # f16 smallest normal, subnormals, half of smallest (tie to 0)
               0x33000001, 0x33C00000, 0x3A001000, 0x3A003000,     # just above half-tie, 1.5 ulp, subnormal ties
               0x3F801000, 0x3F803000, 0x3F800FFF, 0xC7800000]     # f16 mantissa ties, negative overflow
    rng = np.random.default_rng(7)
    rand = list(rng.integers(0, 2**32, size=1000, dtype=np.uint64).astype(np.uint32))
    # values in float16's range with random low bits, to exercise rounding
    rand += list((rng.standard_normal(1000).astype(np.float32) * np.float32(100)).view(np.uint32))
    rand += list((rng.standard_normal(300).astype(np.float32) * np.float32(1e-6)).view(np.uint32))
    bits = np.array(special + [int(x) for x in rand], dtype=np.uint32)
    f = bits.view(np.float32)
    bf = torch.from_numpy(f.copy()).to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        h_np = f.astype(np.float16).view(np.uint16)
    h_t = torch.from_numpy(f.copy()).to(torch.float16).view(torch.int16).numpy().astype(np.uint16)
    cases = []
    for i in range(len(bits)):
        isnan = bool(np.isnan(f[i]))
        if not isnan and h_np[i] != h_t[i]:
            sys.exit("numpy and torch disagree on f16 of %08x" % bits[i])
        cases.append({"f32": int(bits[i]), "bf16": int(bf[i]), "f16": int(h_np[i]), "nan": isnan})
    # back direction: every f16 and bf16 bit pattern widened to f32
    all16 = np.arange(0, 65536, dtype=np.uint32).astype(np.uint16)
    f16w = all16.view(np.float16).astype(np.float32).view(np.uint32)
    bf16w = torch.from_numpy(all16.astype(np.int16)).view(torch.bfloat16).to(torch.float32).view(torch.int32).numpy().astype(np.uint32)
    # The widening tables are recorded as CRC-32s of their little-endian u32
    # arrays (65536 entries each) to keep the fixture small.
    with open(path, "w") as fp:
        json.dump({"narrow": cases,
                   "f16_to_f32_crc32": zlib.crc32(f16w.astype("<u4").tobytes()),
                   "bf16_to_f32_crc32": zlib.crc32(bf16w.astype("<u4").tobytes())}, fp)


def read_safetensors(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    assert 8 + n <= size, "%s: header length %d past end" % (path, n)
    assert (8 + n) % 8 == 0, "%s: data start %d not 8-aligned" % (path, 8 + n)
    hj = buf[8:8 + n]
    header = json.loads(hj.decode("utf-8"), object_pairs_hook=dict)
    assert hj.rstrip(b" ") == hj.rstrip(), "header padding must be spaces"
    meta = header.pop("__metadata__", {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()), "metadata must be str->str"
    data = buf[8 + n:]
    regions = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items())
    pos = 0
    for b, e, k in regions:
        assert b == pos, "%s: tensor %s starts at %d, expected %d" % (path, k, b, pos)
        pos = e
    assert pos == len(data), "%s: data is %d bytes, tensors cover %d" % (path, len(data), pos)
    out = {}
    for k, v in header.items():
        np_t, u_t, sz = DTYPES[v["dtype"]]
        b, e = v["data_offsets"]
        count = int(np.prod(v["shape"], dtype=np.int64))
        assert e - b == count * sz, "%s: tensor %s has %d bytes for shape %s" % (path, k, e - b, v["shape"])
        raw = data[b:e]
        out[k] = (v["dtype"], v["shape"], raw)
    return out, meta, buf[:8 + n]


def to_torch(dtype, shape, raw):
    if dtype == "BF16":
        return torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16).reshape(shape)
    np_t = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dtype]
    return torch.from_numpy(np.frombuffer(raw, dtype=np_t).copy()).reshape(shape)


TORCH_DT = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def check(d, against=None):
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    assert man["format"] == "mypt-checkpoint" and man["format_version"] == 1
    for name, s in man["files"].items():
        with open(os.path.join(d, name), "rb") as f:
            b = f.read()
        assert len(b) == s["size"] and zlib.crc32(b) == s["crc32"], "%s: checksum mismatch" % name
    ts = json.load(open(os.path.join(d, "training_state.json")))
    assert ts["format_version"] == 1, "training_state format_version"
    json.load(open(os.path.join(d, "config.json")))
    result = {"training_state": ts, "tensors": {}}
    for fname, sums in man["safetensors"].items():
        tensors, meta, head = read_safetensors(os.path.join(d, fname))
        assert os.path.getsize(os.path.join(d, fname)) == sums["size"]
        assert zlib.crc32(head) == sums["header_crc32"], "%s: header crc" % fname
        assert set(tensors) == set(sums["tensor_crc32"]), "%s: manifest tensor set" % fname
        if fname == "model.safetensors":
            result["tie_weights"] = meta.get("tie_weights")
            if meta.get("tie_weights") == "true":
                assert "lm_head.weight" not in tensors
        for k, (dt, shape, raw) in tensors.items():
            assert zlib.crc32(raw) == sums["tensor_crc32"][k], "%s: tensor %s crc" % (fname, k)
            t = to_torch(dt, shape, raw)
            result["tensors"][fname + ":" + k] = {"dtype": dt, "shape": shape, "bits": raw_bits(t)[1]}
            if against:
                ref, _, _ = read_safetensors(os.path.join(against, fname))
                rdt, rshape, rraw = ref[k]
                assert rshape == shape, "%s: shape differs from reference" % k
                want = to_torch(rdt, rshape, rraw).to(TORCH_DT[dt])
                assert raw_bits(want)[0] == raw, "%s: %s bits differ from torch's conversion" % (k, dt)
    json.dump(result, sys.stdout)


def mypt_pt(d):
    """A tiny MyPT-style model.pt (torch zip pickle) for the importer."""
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(99)
    sd = {}
    for n, s in tiny_gpt_params(tied=True):
        sd[n] = torch.randn(s, generator=g).to(torch.bfloat16)
    sd["lm_head.weight"] = sd["token_embedding_table.weight"]
    torch.save({"state_dict": sd, "checkpoint_dtype": "bf16", "model_dtype": "bfloat16"}, os.path.join(d, "model.pt"))


def main():
    if sys.argv[1] == "fixtures":
        out = sys.argv[2]
        write_checkpoint(os.path.join(out, "ref_tied_f32"), tied=True, dtype=torch.float32, moments=True, step=42)
        write_checkpoint(os.path.join(out, "ref_untied_bf16"), tied=False, dtype=torch.bfloat16, moments=False, step=7)
        dtype_cases(os.path.join(out, "dtype_cases.json"))
    elif sys.argv[1] == "check":
        against = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--against" else None
        check(sys.argv[2], against)
    elif sys.argv[1] == "mypt-pt":
        mypt_pt(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
