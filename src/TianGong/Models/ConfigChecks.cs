namespace TianGong.Models;

/// <summary>Range checks shared by every config record, so every error reads "field: must be ..., got ...".</summary>
public static class ConfigChecks
{
    public static void Positive(string field, long value)
    {
        if (value <= 0) throw new TianGongException($"{field}: must be a positive integer, got {value}");
    }

    public static void InRange(string field, double value, double min, double max, bool minInclusive = true, bool maxInclusive = true)
    {
        bool ok = (minInclusive ? value >= min : value > min) && (maxInclusive ? value <= max : value < max);
        if (!ok || double.IsNaN(value))
            throw new TianGongException($"{field}: must be in {(minInclusive ? "[" : "(")}{min}, {max}{(maxInclusive ? "]" : ")")}, got {value}");
    }

    public static void OneOf(string field, string value, params IReadOnlyList<string> allowed)
    {
        if (!allowed.Contains(value))
            throw new TianGongException($"{field}: must be one of {string.Join(", ", allowed)}, got '{value}'");
    }

    public static void Divides(string field, long divisor, string ofField, long value)
    {
        if (divisor <= 0 || value % divisor != 0)
            throw new TianGongException($"{field}: must divide {ofField} ({value}), got {divisor}");
    }
}
