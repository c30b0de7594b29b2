#!/usr/bin/env node
// Regenerates vectors.json: GPT-2 token ids for a varied corpus, computed by
// two independent GPT-2 implementations from npm — tiktoken (OpenAI's Rust
// tiktoken compiled to WASM) and js-tiktoken (a pure-JS port) — which must
// agree. "mypt" ids add MyPT's special-token rule on top: split the text on
// the 19 tag strings (longest first), encode_ordinary each span.
//
// Run from the repository root (npm packages go to a throwaway directory):
//
//   d=$(mktemp -d) && (cd "$d" && npm init -y >/dev/null && npm install tiktoken@1.0.22 js-tiktoken@1.0.21) &&
//   NODE_PATH="$d/node_modules" node core/tokenizer/testdata/gen_vectors.cjs > core/tokenizer/testdata/vectors.json
"use strict";

const { get_encoding } = require("tiktoken");
const { Tiktoken } = require("js-tiktoken/lite");
const gpt2Ranks = require("js-tiktoken/ranks/gpt2");

const wasm = get_encoding("gpt2");
const pure = new Tiktoken(gpt2Ranks);

const SPECIALS = [
  "<myPT_system>", "</myPT_system>", "<myPT_user>", "</myPT_user>",
  "<myPT_assistant>", "</myPT_assistant>", "<myPT_user_context>", "</myPT_user_context>",
  "<myPT_assistant_context>", "</myPT_assistant_context>", "<myPT_toolcall>", "</myPT_toolcall>",
  "<myPT_toolresult>", "</myPT_toolresult>", "<myPT_think>", "</myPT_think>",
  "<myPT_cite>", "</myPT_cite>", "<myPT_eot>",
];
const SPECIAL_ID = new Map(SPECIALS.map((s, i) => [s, 50257 + i]));
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&");
const specialRe = new RegExp(
  [...SPECIALS].sort((a, b) => b.length - a.length).map(escapeRe).join("|"), "g");

function ordinary(text) {
  const a = Array.from(wasm.encode_ordinary(text));
  const b = pure.encode(text, [], []); // no special tokens allowed or disallowed: plain text
  if (a.length !== b.length || a.some((x, i) => x !== b[i])) {
    throw new Error(`tiktoken and js-tiktoken disagree on ${JSON.stringify(text)}`);
  }
  return a;
}

function myptEncode(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(specialRe)) {
    if (m.index > last) out.push(...ordinary(text.slice(last, m.index)));
    out.push(SPECIAL_ID.get(m[0]));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(...ordinary(text.slice(last)));
  return out;
}

// MyPT's decode: runs of ordinary ids -> bytes -> UTF-8 with replacement;
// special ids -> tag; other ids >= 50257 -> <unk_tok_ID>.
function myptDecode(ids) {
  const td = new TextDecoder("utf-8", { fatal: false });
  let out = "";
  let run = [];
  const flush = () => {
    if (run.length) out += td.decode(wasm.decode(new Uint32Array(run)));
    run = [];
  };
  for (const id of ids) {
    if (id < 50257) { run.push(id); continue; }
    flush();
    out += id <= 50275 ? SPECIALS[id - 50257] : `<unk_tok_${id}>`;
  }
  flush();
  return out;
}

const corpus = [
  ["empty", ""],
  ["hello", "Hello world"],
  ["sentence", "The quick brown fox jumps over the lazy dog."],
  ["contractions", "I'm sure you'll see they've said it's what we'd do, isn't it? Don't."],
  ["contractions_upper", "I'M SURE YOU'LL SEE THEY'VE SAID IT'S"],
  ["contraction_edges", "'s 's' ''s '' 'll'll x'ree y'ddd ’s curly"],
  ["spaces_2", "a  b"],
  ["spaces_runs", "a   b    c     d"],
  ["leading_trailing", "   leading and trailing   "],
  ["only_spaces", "     "],
  ["newlines", "line1\n\n\nline2\n"],
  ["space_newline_mix", "x \n y  \n\n  z\t\t\tw \t \n"],
  ["crlf", "windows\r\nline\r\n\r\nend"],
  ["tabs_indent", "\tdef f():\n\t\treturn 1\n"],
  ["unicode_spaces", "a\u00a0b\u2003c\u3000d \u00a0 e\u2028f\u0085g"],
  ["digits", "12345678901234567890 3.14159 1,000,000 v2.0.1 0x1F 1e-10 -42"],
  ["arithmetic", "What is 17 + 25? 17 + 25 = 42. And 1234*5678=7006652."],
  ["unicode_digits", "２０２４年 ٣٤٥ ৭৮৯ ²³ ½ Ⅻ"],
  ["german", "Grüße aus München! Ärger über Öl, Straße, Fußgängerübergänge. „Zitat“ – Gedankenstrich."],
  ["french", "Ça va? L'été à Paris, naïve café résumé, œuvre."],
  ["combining", "e\u0301 a\u0308 n\u0303 Z\u0351\u0352"],
  ["cjk", "你好，世界！こんにちは、世界。안녕하세요 세계"],
  ["cyrillic_greek", "Привет, мир! Γειά σου Κόσμε"],
  ["rtl", "مرحبا بالعالم שלום עולם"],
  ["indic_thai", "नमस्ते दुनिया สวัสดีชาวโลก"],
  ["emoji", "😀🎉👍🏽 ❤️ 👨‍👩‍👧‍👦 🇩🇪🇨🇭 ok👌"],
  ["math_alnum", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛"],
  ["controls", "a\u0000b\u0001c\u007fd\u200be\u200df\ufeffg"],
  ["punct_runs", "!!!??? ... --- *** ((( ))) ;;; \"\"\" '''"],
  ["url_email", "https://example.com/path?q=1&r=two#frag mail me: a.b+c@example.org"],
  ["long_repeat", "a".repeat(300) + " " + "ab".repeat(80)],
  ["long_word", "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis"],
  ["python_code", "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])  # 0 1 1 2\n"],
  ["js_code", "const x = {a: 1, 'b': [2, 3]};\nfor (let i = 0; i < 10; i++) { console.log(`v=${i}`); }\n"],
  ["json", "{\"name\": \"MyPT\", \"ids\": [50257, 50275], \"ok\": true, \"none\": null}"],
  ["html", "<div class=\"x\"><p>Hi &amp; bye</p></div>"],
  ["endoftext_as_text", "before<|endoftext|>after"],
  ["tags_as_text_ordinary", "<myPT_user>Hi</myPT_user><myPT_assistant>Hello!</myPT_assistant><myPT_eot>"],
  ["chat", "<myPT_system>You are MyPT.</myPT_system><myPT_user>What is 2+2?</myPT_user><myPT_assistant>2+2 = 4.</myPT_assistant><myPT_eot>"],
  ["chat_all_tags", "<myPT_system>S</myPT_system><myPT_user><myPT_user_context>ctx</myPT_user_context>q</myPT_user><myPT_assistant_context>ac</myPT_assistant_context><myPT_assistant><myPT_think>t</myPT_think>a<myPT_toolcall>{\"name\": \"x\"}</myPT_toolcall><myPT_toolresult>r</myPT_toolresult><myPT_cite>c</myPT_cite></myPT_assistant><myPT_eot>"],
  ["tag_lookalikes", "< myPT_user> <myPT_User> <myPT_unknown> <<myPT_eot>> <myPT_user <myPT_user_context> </myPT_eot>"],
  ["tags_adjacent_spaces", "  <myPT_user>  spaced  </myPT_user>  \n<myPT_eot>\n"],
  ["tag_mid_word", "abc<myPT_eot>def 12<myPT_eot>34 ' <myPT_eot>s"],
];

// Deterministic pseudo-random strings over a mix of classes that stress the
// pre-tokenizer (letters, digits, punctuation, whitespace kinds, marks).
function* randomStrings(count) {
  let s = 0x9e3779b9 >>> 0;
  const rnd = (n) => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s % n; };
  const pools = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", " ", "  ", "\n", "\t", "\r\n",
    "'sdmtlvre", "!?.,;:-_()[]{}<>/\\\"'@#$%^&*+=|~`", "äöüßÄÖÜéèêçñ", "日本語中文한국어", "😀🎉👍", "\u0301\u0308",
    "\u00a0\u3000\u2009", "٠١٢٣४५६", "αβγδЖЗИ",
  ];
  for (let c = 0; c < count; c++) {
    const len = 1 + rnd(60);
    let str = "";
    for (let i = 0; i < len; i++) {
      const pool = Array.from(pools[rnd(pools.length)]);
      str += pool[rnd(pool.length)];
    }
    yield str;
  }
}
let r = 0;
for (const str of randomStrings(300)) corpus.push([`random_${r++}`, str]);

const cases = corpus.map(([name, text]) => ({
  name, text, ordinary: ordinary(text), mypt: myptEncode(text),
}));

// Decode cases: id sequences including ones that cut multi-byte characters
// apart, special ids and unknown ids above the base vocabulary.
const emoji = ordinary("😀 Grüße");
const decodes = [
  [...emoji],
  emoji.slice(0, 1),
  emoji.slice(1),
  [...emoji.slice(0, 1), 50261, ...emoji.slice(1, 2), 50275],
  [15496, 50280, 995, 50303],
  [50257, 50258, 50275],
  [],
].map((ids) => ({ ids, text: myptDecode(ids) }));

process.stdout.write(JSON.stringify({
  generator: "tiktoken@1.0.22 (WASM) cross-checked with js-tiktoken@1.0.21",
  cases, decodes,
}) + "\n");
