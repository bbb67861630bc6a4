namespace TianGong.Tokenizers;

/// <summary>Trains a GPT-2-style byte-level BPE tokenizer from raw text.</summary>
public static class ByteLevelBpeTrainer
{
    /// <summary>
    /// Ids: special tokens 0.. (in option order), then the 256 byte tokens in byte order (so any byte
    /// sequence is encodable), then merged tokens in the order they were learned.
    /// </summary>
    public static ByteLevelBpeTokenizer Train(IEnumerable<string> texts, BpeTrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(texts);
        options.Validate();
        var specials = options.SpecialTokens;

        var counts = WordCounter.Count(texts, specials);
        // Sorted so that thread scheduling during counting cannot change anything downstream.
        var words = counts.OrderBy(w => w.Key, StringComparer.Ordinal).ToArray();

        var tokenBytes = new List<byte[]>(options.VocabSize);
        foreach (var special in specials) tokenBytes.Add(System.Text.Encoding.UTF8.GetBytes(special));
        for (int b = 0; b < 256; b++) tokenBytes.Add([(byte)b]);

        var learner = new BpeMergeLearner(words, firstByteId: specials.Count);
        var merges = learner.Learn(tokenBytes, options.VocabSize, options.MinFrequency);

        var vocab = new Dictionary<string, int>(tokenBytes.Count, StringComparer.Ordinal);
        for (int id = 0; id < specials.Count; id++) vocab.Add(specials[id], id);
        for (int id = specials.Count; id < tokenBytes.Count; id++) vocab.Add(ByteLevelAlphabet.Spell(tokenBytes[id]), id);

        var mergeNames = merges
            .Select(m => (ByteLevelAlphabet.Spell(tokenBytes[m.Left]), ByteLevelAlphabet.Spell(tokenBytes[m.Right])))
            .ToList();
        var added = specials.Select((s, id) => new AddedToken(id, s)).ToList();
        return new ByteLevelBpeTokenizer(new TokenizerJsonData(vocab, mergeNames, added), "trained tokenizer");
    }
}
