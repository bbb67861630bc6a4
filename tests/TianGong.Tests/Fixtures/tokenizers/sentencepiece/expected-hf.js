// Ids of the fixed test strings from the real Rust tokenizers (0.22.2 via @anush008/tokenizers 0.6.0) with a
// tokenizer.json rebuilt from a tokenizer.model (make-llama2-json.js, make-albert-json.js); the C# tests read the
// .model itself and must agree. Usage: node expected-hf.js TOKENIZER.json ../hf-expected-ids.json OUT.json
const {Tokenizer} = require('@anush008/tokenizers');
const fs = require('fs');
(async () => {
  const [file, stringsFile, outFile] = process.argv.slice(2);
  const strings = JSON.parse(fs.readFileSync(stringsFile, 'utf8')).strings;
  const t = Tokenizer.fromFile(file);
  const out = {generator: '@anush008/tokenizers 0.6.0 (Rust tokenizers 0.22.2), node ' + process.version, tokenizer: file,
    strings, ids: [], ids_with_special_tokens: [], decoded: []};
  for (const s of strings) {
    const ids = (await t.encode(s, null, {addSpecialTokens: false})).getIds();
    out.ids.push(ids);
    out.ids_with_special_tokens.push((await t.encode(s, null, {addSpecialTokens: true})).getIds());
    out.decoded.push(await t.decode(ids, false));
  }
  fs.writeFileSync(outFile, JSON.stringify(out));
})();
