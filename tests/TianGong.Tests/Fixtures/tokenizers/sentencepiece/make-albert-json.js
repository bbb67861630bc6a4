// Usage: node make-albert-json.js albert-30k-clean.model albert-tokenizer.json
// Writes the tokenizer.json that transformers' SpmConverter builds for a Unigram tokenizer.model (convert_slow_tokenizer.py:
// Precompiled charsmap, Strip right, Replace " {2,}" -> "▁", Metaspace prepend "always", Unigram with unk_id, CONTROL and
// UNKNOWN pieces as special added tokens, USER_DEFINED ones as ordinary added tokens), reading the ModelProto with a
// minimal protobuf decoder of its own, so that the Rust tokenizers can encode what TianGong reads from the .model directly.
const fs = require('fs');
function varint(b, p) { let r = 0, s = 0, x; do { x = b[p.i++]; r += (x & 0x7f) * 2 ** s; s += 7; } while (x & 0x80); return r; }
function fields(b) {
  const p = {i: 0}, out = [];
  while (p.i < b.length) {
    const tag = varint(b, p), f = Math.floor(tag / 8), w = tag & 7;
    if (w === 0) out.push([f, varint(b, p)]);
    else if (w === 1) { out.push([f, b.subarray(p.i, p.i + 8)]); p.i += 8; }
    else if (w === 5) { out.push([f, b.readFloatLE(p.i)]); p.i += 4; }
    else if (w === 2) { const n = varint(b, p); out.push([f, b.subarray(p.i, p.i + n)]); p.i += n; }
    else throw new Error('wire type ' + w);
  }
  return out;
}
const model = fs.readFileSync(process.argv[2]);
const pieces = [], trainer = {unk: 0}, norm = {charsmap: null};
for (const [f, v] of fields(model)) {
  if (f === 1) { const p = {piece: '', score: 0, type: 1}; for (const [g, x] of fields(v)) { if (g === 1) p.piece = x.toString('utf8'); if (g === 2) p.score = x; if (g === 3) p.type = x; } pieces.push(p); }
  if (f === 2) for (const [g, x] of fields(v)) { if (g === 40) trainer.unk = x; if (g === 3) trainer.type = x; }
  if (f === 3) for (const [g, x] of fields(v)) { if (g === 2) norm.charsmap = Buffer.from(x).toString('base64'); }
}
const added = pieces.map((p, id) => ({id, content: p.piece, single_word: false, lstrip: false, rstrip: false, normalized: false,
  special: p.type !== 4})).filter((_, id) => [2, 3, 4].includes(pieces[id].type));
const json = {version: '1.0', truncation: null, padding: null, added_tokens: added,
  normalizer: {type: 'Sequence', normalizers: [{type: 'Precompiled', precompiled_charsmap: norm.charsmap},
    {type: 'Strip', strip_left: false, strip_right: true}, {type: 'Replace', pattern: {Regex: ' {2,}'}, content: '▁'}]},
  pre_tokenizer: {type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true},
  post_processor: null, decoder: {type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true},
  model: {type: 'Unigram', unk_id: trainer.unk, vocab: pieces.map(p => [p.piece, p.score]), byte_fallback: false}};
fs.writeFileSync(process.argv[3], JSON.stringify(json));
console.log(pieces.length, 'pieces; user-defined:', pieces.filter(p => p.type === 4).map(p => p.piece).join(' '), '; control:', added.filter(a => a.special).map(a => a.content).join(' '));
