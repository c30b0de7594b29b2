#!/usr/bin/env python3
"""Independent reference for `mypt prepare`'s byte compatibility with MyPT.

MyPT's own scripts/sft/prepare_chat_sft.py (which needs torch and tiktoken)
cannot run here, so this script re-implements the behaviour documented in
docs/MYPT.md §1-§9 with the same building blocks MyPT
uses: numpy's RandomState for the val split, CPython's random.shuffle for
the pack shuffle, numpy's tofile for the arrays, and OpenAI's tiktoken
(npm package, WASM build of the Rust library) for the token ids. It writes
the input JSONL files, then for every case in cases.json the files MyPT
would write, into ref/<case>/ — including MyPT's multi-shard layout (first
shard at the split root, later ones in shard_00001, ...).

Run from the repository root:

    d=$(mktemp -d) && (cd "$d" && npm init -y >/dev/null && npm install tiktoken@1.0.22) &&
    NODE_PATH="$d/node_modules" python3 core/prepare/testdata/gen_reference.py

Needs python3 with numpy (Debian: apt-get install -y python3-numpy) and node.
"""
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "ref")
INPUTS = os.path.join(HERE, "inputs")

SPECIAL_NAMES = [
    "system_open", "system_close", "user_open", "user_close", "assistant_open", "assistant_close",
    "user_context_open", "user_context_close", "assistant_context_open", "assistant_context_close",
    "toolcall_open", "toolcall_close", "toolresult_open", "toolresult_close",
    "think_open", "think_close", "cite_open", "cite_close", "eot",
]
ID = {name: 50257 + i for i, name in enumerate(SPECIAL_NAMES)}
TAG = {
    "system": ("<myPT_system>", "</myPT_system>"),
    "user": ("<myPT_user>", "</myPT_user>"),
    "assistant": ("<myPT_assistant>", "</myPT_assistant>"),
    "user_context": ("<myPT_user_context>", "</myPT_user_context>"),
    "assistant_context": ("<myPT_assistant_context>", "</myPT_assistant_context>"),
    "think": ("<myPT_think>", "</myPT_think>"),
    "cite": ("<myPT_cite>", "</myPT_cite>"),
}
EOT = "<myPT_eot>"
DEFAULT_SYSTEM = "You are MyPT."


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

def chat_rows():
    rows = []
    qa = [
        ("What is 2+2?", "2+2 = 4."),
        ("Name the capital of France.", "The capital of France is Paris."),
        ("Reverse the word: stressed", "desserts"),
        ("Wie viel ist 12 mal 12?", "12 mal 12 ist 144. Grüße aus München!"),
        ("Translate 'good morning' to Japanese.", "おはようございます (ohayou gozaimasu)."),
        ("Give me an emoji for joy", "😀🎉 — joy!"),
        ("Count: 1 2 3 ...", "4 5 6 7 8 9 10"),
        ("Write a Python function that doubles x.", "def double(x):\n    return x * 2\n"),
        ("Spaces   and\ttabs\n\n  please", "  Leading spaces,   runs,\n\n\nand newlines.  "),
        ("What's the weather like?", "I can't check the weather, but I'd suggest a forecast site."),
        ("Extract the name from \"Alice Smith went home\"", "Alice Smith"),
        ("Summarize: The cat sat on the mat all day long.", "A cat stayed on a mat all day."),
    ]
    for i, (q, a) in enumerate(qa):
        rows.append({"system": "You are helpful.", "messages": [
            {"role": "user", "content": q}, {"role": "assistant", "content": a}],
            "mix_source": "basic" if i % 2 else "extra"})
    rows.append({"system": "S", "messages": [
        {"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is 7*6?"}, {"role": "assistant", "content": "7*6 = 42."},
        {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": "You're welcome."}]})
    rows.append({"system": "S", "messages": [
        {"role": "system", "content": "dropped system message"},
        {"content": "a message without a role is a user message"},
        {"role": "toolresult", "content": "dropped tool result"},
        {"role": "assistant", "content": "Calling a tool: <myPT_toolcall>{\"name\": \"calc\", \"expr\": \"1+1\"}</myPT_toolcall>"}]})
    rows.append({"system": "S", "messages": [{"role": "user", "content": "No answer to this one"}]})
    rows.append({"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": 42}]})
    rows.append({"system": " ", "messages": [{"role": "user", "content": 1.5}, {"role": "assistant", "content": True}]})
    rows.append({"system": "S", "messages": [
        {"role": "user", "content": "Where is the Eiffel Tower?", "context": "The Eiffel Tower is in Paris."},
        {"role": "assistant_context", "content": "workspace: travel notes"},
        {"role": "assistant", "content": "It is in Paris.", "think": "The context says Paris.", "cite": "doc1"}],
        "source": "rag"})
    rows.append({"system": "S", "messages": [
        {"role": "user", "content": "ctx but empty", "context": ""},
        {"role": "assistant", "content": "ok", "think": None, "cite": 0}]})
    rows.append({"_replay": True, "text": "Replay text: The quick brown fox. <myPT_eot> tags in replay text."})
    long_answer = " ".join(f"word{i}" for i in range(120))
    rows.append({"system": "S", "messages": [
        {"role": "user", "content": "Please write a long answer."},
        {"role": "assistant", "content": long_answer}]})
    rows.append({"system": "S", "messages": [
        {"role": "user", "content": "Literal tags <myPT_assistant>inside</myPT_assistant> user text"},
        {"role": "assistant", "content": "Done <|endoftext|> plain."}]})
    for i in range(20):
        a, b = 3 * i + 1, 7 * i + 2
        rows.append({"system": "Math", "messages": [
            {"role": "user", "content": f"Compute {a} + {b}."},
            {"role": "assistant", "content": f"{a} + {b} = {a + b}."}],
            "_meta": {"operator": "ADD"}})
    return rows


def operator_rows(offset):
    ops = ["COPY", "WRAP", "EXTRACT"]
    rows = []
    for i in range(30):
        op = ops[i % 3]
        word = f"token{offset + i}x"
        if op == "COPY":
            q, a = f"Copy exactly: {word}", word
        elif op == "WRAP":
            q, a = f"Wrap in brackets: {word}", f"[{word}]"
        else:
            q, a = f"Pull the quoted part out of \"{word} here\"", f"{word} here"
        row = {"system": "Operators", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
               "_meta": {"operator": op, "payload": word}}
        if i % 7 == 3:
            del row["_meta"]["operator"]
        rows.append(row)
    rows.append({"_replay": True, "text": "Operator replay sample."})
    return rows


def val_rows():
    return [
        {"system": "S", "messages": [{"role": "user", "content": "Validation question number one?"},
                                     {"role": "assistant", "content": "Validation answer one."}]},
        {"system": "S", "messages": [{"role": "user", "content": "Tell me a fact about otters."},
                                     {"role": "assistant", "content": "Otters hold hands while sleeping."}]},
        {"system": "S", "messages": [{"role": "user", "content": "Ein deutscher Satz, bitte."},
                                     {"role": "assistant", "content": "Die Straße ist nass."}]},
    ]


def op_val_rows():
    rows = []
    for i, op in enumerate(["COPY", "WRAP", "EXTRACT", "COPY"]):
        word = f"valword{i}z"
        q = {"COPY": f"Repeat this verbatim -> {word}", "WRAP": f"Put {word} inside brackets",
             "EXTRACT": f"Take out the quoted bit: \"{word} now\""}[op]
        a = {"COPY": word, "WRAP": f"[{word}]", "EXTRACT": f"{word} now"}[op]
        rows.append({"system": "Operators", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                     "_meta": {"operator": op, "payload": word}})
    return rows


def write_jsonl(path, rows, crlf_every=0, blank_every=0):
    with open(path, "w", encoding="utf-8", newline="") as f:
        for i, r in enumerate(rows):
            line = json.dumps(r, ensure_ascii=(i % 2 == 0))
            if i % 5 == 4:
                line = "  " + line + " \t"
            end = "\r\n" if crlf_every and i % crlf_every == crlf_every - 1 else "\n"
            f.write(line + end)
            if blank_every and i % blank_every == blank_every - 1:
                f.write("\n   \n")


def write_inputs():
    os.makedirs(INPUTS, exist_ok=True)
    write_jsonl(os.path.join(INPUTS, "chat.jsonl"), chat_rows(), crlf_every=6, blank_every=9)
    write_jsonl(os.path.join(INPUTS, "val.jsonl"), val_rows())
    write_jsonl(os.path.join(INPUTS, "operators.jsonl"), operator_rows(0))
    write_jsonl(os.path.join(INPUTS, "operators_val.jsonl"), op_val_rows())
    # A file with two malformed rows, for --skip-invalid (MyPT skips bad JSON).
    rows = chat_rows()[:8]
    with open(os.path.join(INPUTS, "bad.jsonl"), "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps(r) + "\n")
            if i == 2:
                f.write('{"messages": [{"role": "user", "content": "unterminated"}\n')
            if i == 5:
                f.write("not json at all\n")


# --------------------------------------------------------------------------
# MyPT's behaviour (docs/MYPT.md §1-§9)
# --------------------------------------------------------------------------

def load_jsonl(path):
    rows = []
    with open(path, "r", encoding="utf-8") as f:  # universal newlines, like MyPT
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # MyPT prints a warning and skips the line
    return rows


def serialize(conv, flags):
    parts = []
    if not flags.get("no_system_prompt"):
        prompt = flags.get("system_prompt") or DEFAULT_SYSTEM
        parts.append(TAG["system"][0] + prompt + TAG["system"][1])
    rag = flags.get("enable_rag_tags", False)
    for msg in conv.get("messages", []):
        role = msg.get("role", "user")
        content = msg.get("content", "")
        if role == "user":
            ctx = msg.get("context", "") if rag else ""
            inner = f"{TAG['user_context'][0]}{ctx}{TAG['user_context'][1]}{content}" if ctx else f"{content}"
            parts.append(f"{TAG['user'][0]}{inner}{TAG['user'][1]}")
        elif role == "assistant_context":
            if rag:
                parts.append(f"{TAG['assistant_context'][0]}{content}{TAG['assistant_context'][1]}")
        elif role == "assistant":
            think = msg.get("think", "") if rag else ""
            cite = msg.get("cite", "") if rag else ""
            body = ""
            if think:
                body += f"{TAG['think'][0]}{think}{TAG['think'][1]}"
            body += f"{content}"
            if cite:
                body += f"{TAG['cite'][0]}{cite}{TAG['cite'][1]}"
            parts.append(TAG["assistant"][0] + body + TAG["assistant"][1])
    parts.append(EOT)
    return "".join(parts)


def mask_for(ids, weighted):
    out, inside = [], False
    for t in ids:
        if t == ID["assistant_open"]:
            out.append(0.0)
            inside = True
        elif t == ID["assistant_close"]:
            out.append(2.0 if weighted else 1.0)
            inside = False
        elif t == ID["eot"]:
            out.append(2.0 if weighted else 1.0)
        elif inside:
            if weighted and t in (ID["think_open"], ID["think_close"], ID["cite_open"], ID["cite_close"]):
                out.append(1.5)
            elif weighted and t in (ID["toolcall_open"], ID["toolcall_close"]):
                out.append(2.0)
            else:
                out.append(1.0)
        else:
            out.append(0.0)
    return out


def tokenize_texts(texts):
    res = subprocess.run(["node", os.path.join(HERE, "tokenize.cjs")], input=json.dumps(texts),
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def nested(obj, path):
    cur = obj
    for p in path.split("."):
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            return None
    return str(cur) if cur is not None else None


def greedy_pack(episodes, block, pad):
    packs, cur_t, cur_m, cur_s, count = [], [], [], [], 0
    def flush():
        n = block - len(cur_t)
        packs.append((cur_t + [pad] * n, cur_m + [0] * n, cur_s + [0] * n))
    for toks, mask in episodes:
        if len(toks) > block:
            toks, mask = toks[-block:], mask[-block:]
        if len(cur_t) + len(toks) > block or count >= 255:
            if cur_t:
                flush()
            cur_t, cur_m, cur_s, count = [], [], [], 0
        count += 1
        cur_t = cur_t + list(toks)
        cur_m = cur_m + list(mask)
        cur_s = cur_s + [count] * len(toks)
    if cur_t:
        flush()
    return packs


class ShardWriter:
    """MyPT's EpisodeShardWriter, including its layout: the first flush goes to
    the split root unless the buffer alone reaches tokens_per_shard."""

    def __init__(self, out, split, tps, weighted):
        self.split_dir = os.path.join(out, split)
        os.makedirs(self.split_dir, exist_ok=True)
        self.tps, self.weighted = tps, weighted
        self.tokens, self.masks, self.segs, self.eps = [], [], [], []
        self.shard_idx = self.written = 0
        self.total_tokens = self.total_episodes = 0

    def add(self, toks, mask, segs=None):
        if self.tokens and len(self.tokens) + len(toks) > self.tps:
            self.flush()
        self.eps.append((len(self.tokens), len(toks)))
        self.tokens += toks
        self.masks += mask
        if segs is not None:
            self.segs += segs
        self.total_tokens += len(toks)
        self.total_episodes += 1

    def flush(self):
        if not self.tokens:
            return
        if self.written > 0 or len(self.tokens) >= self.tps:
            d = os.path.join(self.split_dir, f"shard_{self.shard_idx:05d}")
        else:
            d = self.split_dir
        os.makedirs(d, exist_ok=True)
        np.array(self.tokens, dtype=np.uint32).tofile(os.path.join(d, "tokens.bin"))
        np.array([1 if m > 0 else 0 for m in self.masks], dtype=np.uint8).tofile(os.path.join(d, "mask.bin"))
        if self.weighted:
            np.array(self.masks, dtype=np.float32).tofile(os.path.join(d, "mask_weighted.bin"))
        if self.segs:
            np.array(self.segs, dtype=np.uint8).tofile(os.path.join(d, "segment_ids.bin"))
        np.array(self.eps, dtype=np.uint64).tofile(os.path.join(d, "episodes.idx"))
        self.tokens, self.masks, self.segs, self.eps = [], [], [], []
        self.shard_idx += 1
        self.written += 1


def prepare(case):
    flags = case["flags"]
    out = os.path.join(REF, case["name"])
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    convs = load_jsonl(os.path.join(HERE, flags["input"]))
    seed = flags.get("seed", 42)
    if flags.get("val_only"):
        train, val = [], convs
    elif flags.get("val_file"):
        train, val = convs, load_jsonl(os.path.join(HERE, flags["val_file"]))
    else:
        np.random.seed(seed)
        idx = np.random.permutation(len(convs))
        val_idx = set(idx[: int(len(convs) * flags.get("val_split", 0.1))])
        train = [c for i, c in enumerate(convs) if i not in val_idx]
        val = [c for i, c in enumerate(convs) if i in val_idx]

    packing = flags.get("enable_packing", False)
    weighted = flags.get("weighted_mask", False)
    tps = flags.get("tokens_per_shard", 50_000_000)

    def episodes(rows):
        texts, replay = [], []
        for r in rows:
            if packing and r.get("_replay", False):
                texts.append(r.get("text", ""))
                replay.append(True)
            else:
                texts.append(serialize(r, flags))
                replay.append(False)
        ids = tokenize_texts(texts)
        # Only the packing path passes weighted=...; the other one never weights.
        return [(t, [1.0] * len(t) if rp else mask_for(t, weighted and packing)) for t, rp in zip(ids, replay)]

    tw = ShardWriter(out, "train", tps, weighted)
    vw = ShardWriter(out, "val", tps, weighted)
    tr_eps, va_eps = episodes(train), episodes(val)
    if packing:
        block = flags.get("pack_block_size", 4096)
        by = flags.get("pack_by_field")
        shuffle = flags.get("pack_shuffle", True)

        def pack_split(rows, eps, do_shuffle):
            if not by:
                eps = list(eps)
                if do_shuffle:
                    random.seed(seed)
                    random.shuffle(eps)
                return greedy_pack(eps, block, ID["eot"])
            groups = {}
            for r, e in zip(rows, eps):
                key = None if (packing and r.get("_replay", False)) else nested(r, by)
                groups.setdefault(key if key else "_ungrouped", []).append(e)
            packs = []
            for g in groups.values():
                if do_shuffle:
                    random.seed(seed)
                    random.shuffle(g)
                packs += greedy_pack(g, block, ID["eot"])
            return packs

        for t, m, s in pack_split(train, tr_eps, shuffle):
            tw.add(t, m, s)
        for t, m, s in pack_split(val, va_eps, False):
            vw.add(t, m, s)
    else:
        for t, m in tr_eps:
            tw.add(t, m)
        for t, m in va_eps:
            vw.add(t, m)
    tw.flush()
    vw.flush()
    expect = {
        "num_train_conversations": len(train), "num_val_conversations": len(val),
        "num_train_episodes": tw.total_episodes, "num_val_episodes": vw.total_episodes,
        "num_train_tokens": tw.total_tokens, "num_val_tokens": vw.total_tokens,
        "num_train_shards": tw.written, "num_val_shards": vw.written,
    }
    with open(os.path.join(out, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    write_inputs()
    with open(os.path.join(HERE, "cases.json")) as f:
        cases = json.load(f)
    os.makedirs(REF, exist_ok=True)
    for case in cases:
        prepare(case)
        print("wrote", case["name"], file=sys.stderr)


if __name__ == "__main__":
    main()
