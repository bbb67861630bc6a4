// The pieces the Rust tokenizers library's UnicodeScripts pre-tokenizer cuts (@anush008/tokenizers 0.6.0, tokenizers
// 0.22.2): unicode_scripts.json maps every piece to one <unk> token, so each token's offsets are a piece.
// Strings: the 62 of ../hf-expected-ids.json plus cases around spaces, Japanese, Common and post-Unicode-9 code points.
const {Tokenizer} = require('@anush008/tokenizers');
const fs = require('fs');
(async () => {
  const strings = JSON.parse(fs.readFileSync('../hf-expected-ids.json', 'utf8')).strings.concat([
    'どこで生れ。Yes', 'Apples are りんご 林檎', '  leading', 'a  b', 'ｶﾀｶﾅ and ー長音', 'abc123def', 'x🥰y 🥰 z', 'Ωmega αβγ abc',
    'Привет мир hello', 'ก ข 1 2', '\u0301a', 'a\u0301b', '𝟏𝟐𝟑abc', '   ', 'mix中文かなカナ한국어abc']);
  const t = Tokenizer.fromFile('unicode_scripts.json');
  const pieces = [];
  for (const s of strings) pieces.push((await t.encode(s, null, {addSpecialTokens: false})).getOffsets());
  fs.writeFileSync('unicode-scripts-expected.json', JSON.stringify({generator: '@anush008/tokenizers 0.6.0 (Rust tokenizers 0.22.2)', strings, pieces}));
})();
