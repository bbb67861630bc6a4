namespace TianGong.Inference;

/// <summary>
/// Restricts which tokens may come next, given what has been generated so far (acrostic lines, a verse form).
/// Constraints work on token bytes, not decoded text: a token may hold part of a character.
/// </summary>
public interface ITokenConstraint
{
    /// <summary>What the constraint asks for, for error messages ("acrostic 天工開物").</summary>
    string Description { get; }

    /// <summary>Allowed tokens by id (the tokenizer's vocabulary; not to be modified), or null when anything may come next.</summary>
    bool[]? AllowedTokens(IReadOnlyList<int> generated);

    /// <summary>True once the constraint is satisfied and generation must end.</summary>
    bool IsComplete(IReadOnlyList<int> generated);
}

/// <summary>Several constraints at once: a token must be allowed by each, and generation ends when all are satisfied.</summary>
public sealed class AllOfConstraint : ITokenConstraint
{
    private readonly IReadOnlyList<ITokenConstraint> parts;

    public AllOfConstraint(IReadOnlyList<ITokenConstraint> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("give at least one constraint", nameof(parts));
        this.parts = parts;
    }

    public string Description => string.Join(" + ", parts.Select(p => p.Description));

    /// <summary>One constraint as it is, several as their conjunction, none as null.</summary>
    public static ITokenConstraint? Of(params ITokenConstraint?[] constraints)
    {
        var given = constraints.OfType<ITokenConstraint>().ToList();
        return given.Count switch { 0 => null, 1 => given[0], _ => new AllOfConstraint(given) };
    }

    public bool[]? AllowedTokens(IReadOnlyList<int> generated)
    {
        bool[]? combined = null;
        foreach (var part in parts)
        {
            if (part.AllowedTokens(generated) is not { } allowed) continue;
            if (combined is null) { combined = (bool[])allowed.Clone(); continue; }
            int n = Math.Min(combined.Length, allowed.Length);
            for (int i = 0; i < n; i++) combined[i] &= allowed[i];
            for (int i = n; i < combined.Length; i++) combined[i] = false;
        }
        return combined;
    }

    public bool IsComplete(IReadOnlyList<int> generated) => parts.All(p => p.IsComplete(generated));
}

/// <summary>Every token's bytes once, for constraints that test tokens against what they must spell.</summary>
public sealed class TokenByteTable
{
    public TokenByteTable(Tokenizers.ITextTokenizer tokenizer)
    {
        int vocab = tokenizer.VocabSize;
        var specials = tokenizer.SpecialTokens.Select(tokenizer.TokenToId).OfType<int>().ToHashSet();
        if (tokenizer.EosId >= 0) specials.Add(tokenizer.EosId);
        Bytes = new byte[vocab][];
        IsSpecial = new bool[vocab];
        for (int id = 0; id < vocab; id++)
        {
            // An id without a token (a hole in the vocabulary) is treated as a special: no constraint allows it.
            try { Bytes[id] = tokenizer.TokenBytes(id); }
            catch (ArgumentOutOfRangeException) { Bytes[id] = []; specials.Add(id); }
            IsSpecial[id] = specials.Contains(id);
        }
        EosId = tokenizer.EosId;
    }

    public byte[][] Bytes { get; }

    /// <summary>Special tokens (eos, pad, chat markers): their bytes are their names, not text a constraint should count.</summary>
    public bool[] IsSpecial { get; }

    public int EosId { get; }

    public int VocabSize => Bytes.Length;

    /// <summary>The bytes of the generated tokens, specials left out.</summary>
    public byte[] Concat(IReadOnlyList<int> ids)
    {
        var result = new List<byte>();
        foreach (var id in ids)
            if (id >= 0 && id < Bytes.Length && !IsSpecial[id]) result.AddRange(Bytes[id]);
        return [.. result];
    }
}
