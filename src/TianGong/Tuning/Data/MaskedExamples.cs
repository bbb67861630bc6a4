using TianGong.Data;
using TianGong.Training;

namespace TianGong.Tuning.Data;

/// <summary>A token sequence with the tokens whose prediction is trained (SFT: assistant tokens), and where it came from.</summary>
public sealed record MaskedExample(int[] Ids, bool[] Trained, string Source);

/// <summary>
/// Batches of whole examples for the trainer: right-padded to the longest row, targets are the next ids where the next
/// token is trained and -100 (cross-entropy's ignore_index) elsewhere, so the next-token loss counts only trained tokens.
/// Training rows are drawn by a seeded hash of (step, row), a pure function of the index as the trainer requires.
/// </summary>
public sealed class MaskedExampleData : ITrainingData<TokenBatch>
{
    public const int IgnoreIndex = -100;
    private readonly IReadOnlyList<MaskedExample> train, validation;
    private readonly int batchSize, padId;
    private readonly ulong seed;
    private readonly Device device;

    /// <param name="maxLength">Examples are cut to this many tokens + 1; one with nothing trained left is an error naming it.</param>
    public MaskedExampleData(IReadOnlyList<MaskedExample> train, IReadOnlyList<MaskedExample> validation, int batchSize, int maxLength, int padId, long seed, Device device)
    {
        this.train = train.Select(e => Cut(e, maxLength)).ToList();
        this.validation = validation.Select(e => Cut(e, maxLength)).ToList();
        if (this.train.Count == 0) throw new TianGongException("no training examples");
        (this.batchSize, this.padId, this.seed, this.device) = (batchSize, Math.Max(0, padId), (ulong)seed, device);
    }

    public TokenBatch TrainBatch(long index) =>
        Batch(Enumerable.Range(0, batchSize).Select(row => train[(int)SplitMix64.ToRange(SplitMix64.Hash(seed, (ulong)index, (ulong)row), (ulong)train.Count)]).ToList());

    public IEnumerable<TokenBatch> ValidationBatches() => validation.Chunk(batchSize).Select(c => Batch(c));

    /// <summary>(Input, Target) for these examples; exposed for tests of the label mask.</summary>
    public TokenBatch Batch(IReadOnlyList<MaskedExample> rows)
    {
        int t = rows.Max(r => r.Ids.Length) - 1;
        var input = new long[rows.Count * t];
        var target = new long[rows.Count * t];
        Array.Fill(input, padId);
        Array.Fill(target, IgnoreIndex);
        for (int b = 0; b < rows.Count; b++)
            for (int i = 0; i + 1 < rows[b].Ids.Length; i++)
            {
                input[b * t + i] = rows[b].Ids[i];
                if (rows[b].Trained[i + 1]) target[b * t + i] = rows[b].Ids[i + 1];
            }
        return new TokenBatch(tensor(input, [rows.Count, t], device: device), tensor(target, [rows.Count, t], device: device));
    }

    private static MaskedExample Cut(MaskedExample e, int maxLength)
    {
        var cut = e.Ids.Length > maxLength + 1 ? e with { Ids = e.Ids[..(maxLength + 1)], Trained = e.Trained[..(maxLength + 1)] } : e;
        if (cut.Ids.Length < 2 || !cut.Trained.Skip(1).Any(x => x))
            throw new TianGongException($"{e.Source}: no trained token within the first {maxLength + 1} tokens (raise --seq-len or shorten the row)");
        return cut;
    }
}
