// Expected outputs of the hand-built component tokenizers, from the Rust tokenizers library (@anush008/tokenizers 0.6.0).
const {Tokenizer} = require('@anush008/tokenizers');
const fs = require('fs');
(async () => {
  const strings = JSON.parse(fs.readFileSync('component_strings.json', 'utf8'));
  const out = {generator: "@anush008/tokenizers 0.6.0 (Rust tokenizers 0.22.2)", strings, tokenizers: {}};
  for (const name of ['unigram_metaspace', 'wordpiece_bert', 'wordpiece_splits', 'wordpiece_whitespace', 'bpe_suffix', 'bytelevel_added']) {
    const t = Tokenizer.fromFile(name + '.json');
    const r = out.tokenizers[name] = {ids: [], tokens: [], offsets: [], ids_with_special_tokens: [], decoded: [], decoded_skip_special: []};
    for (const s of strings) {
      const e = await t.encode(s, null, {addSpecialTokens: false});
      r.ids.push(e.getIds()); r.tokens.push(e.getTokens()); r.offsets.push(e.getOffsets());
      const e2 = await t.encode(s, null, {addSpecialTokens: true});
      r.ids_with_special_tokens.push(e2.getIds());
      r.decoded.push(await t.decode(e2.getIds(), false));
      r.decoded_skip_special.push(await t.decode(e2.getIds(), true));
    }
  }
  fs.writeFileSync('components-expected.json', JSON.stringify(out));
})();
