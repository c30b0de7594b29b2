#!/usr/bin/env node
// Reads a JSON list of strings on stdin and writes a JSON list of token id
// lists: MyPT's Tokenizer.encode — split on the 19 special tag strings
// (longest first), tiktoken's gpt2 encode_ordinary on every span between
// them. Used by gen_reference.py; needs the npm package tiktoken on
// NODE_PATH (see gen_reference.py).
"use strict";
const { get_encoding } = require("tiktoken");

const SPECIALS = [
  "<myPT_system>", "</myPT_system>", "<myPT_user>", "</myPT_user>",
  "<myPT_assistant>", "</myPT_assistant>", "<myPT_user_context>", "</myPT_user_context>",
  "<myPT_assistant_context>", "</myPT_assistant_context>", "<myPT_toolcall>", "</myPT_toolcall>",
  "<myPT_toolresult>", "</myPT_toolresult>", "<myPT_think>", "</myPT_think>",
  "<myPT_cite>", "</myPT_cite>", "<myPT_eot>",
];
const ID = new Map(SPECIALS.map((s, i) => [s, 50257 + i]));
const re = new RegExp([...SPECIALS].sort((a, b) => b.length - a.length)
  .map((s) => s.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&")).join("|"), "g");
const enc = get_encoding("gpt2");

function encode(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) out.push(...enc.encode_ordinary(text.slice(last, m.index)));
    out.push(ID.get(m[0]));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(...enc.encode_ordinary(text.slice(last)));
  return out;
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => { input += d; });
process.stdin.on("end", () => {
  process.stdout.write(JSON.stringify(JSON.parse(input).map(encode)));
});
