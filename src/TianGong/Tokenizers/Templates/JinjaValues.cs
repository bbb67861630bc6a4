using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace TianGong.Tokenizers.Templates;

/// <summary>A variable that does not exist (Jinja's default <c>Undefined</c>): prints as nothing, is false, iterates as empty.</summary>
internal sealed record Undefined(string Name);

/// <summary>A callable value (global function, bound method, macro): positional and keyword arguments.</summary>
internal delegate object? JinjaFunction(IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs);

/// <summary>A Python tuple (dict items, dictsort pairs): a list that prints with parentheses.</summary>
internal sealed class PyTuple : List<object?>
{
    public PyTuple(params object?[] items) : base(items) { }
}

/// <summary>The object <c>namespace()</c> returns: attributes that <c>{% set ns.x = ... %}</c> may change inside loops.</summary>
internal sealed class JinjaNamespace : Dictionary<string, object?>;

/// <summary>
/// Template values follow Python's: None (null), bool, long, double, string, <see cref="List{T}"/> of values (list and
/// tuple), <see cref="Dictionary{TKey,TValue}"/> of string keys (dict, insertion-ordered), plus the types above.
/// Conversions to text follow Python's <c>str</c>/<c>repr</c> and transformers' <c>tojson</c> (Python's json.dumps).
/// </summary>
public static class JinjaValue
{
    /// <summary>JSON (messages, tools) as template values.</summary>
    public static object? FromJson(JsonNode? node) => node switch
    {
        null => null,
        JsonObject o => o.ToDictionary(p => p.Key, p => FromJson(p.Value)),
        JsonArray a => a.Select(FromJson).ToList(),
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => v.GetValue<string>(),
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Number => v.TryGetValue<long>(out long l) ? (object)l : v.GetValue<double>(),
            _ => null,
        },
        _ => null,
    };

    internal static bool IsTrue(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    internal static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        JinjaNamespace => "Namespace",
        Dictionary<string, object?> => "dict",
        _ => "function",
    };

    /// <summary>Python's <c>str(value)</c>, as <c>{{ value }}</c> prints it.</summary>
    internal static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v),
    };

    /// <summary>Python's <c>repr(value)</c> (how lists and dicts print their items).</summary>
    internal static string Repr(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        string s => StringRepr(s),
        PyTuple t => t.Count == 1 ? $"({Repr(t[0])},)" : "(" + string.Join(", ", t.Select(Repr)) + ")",
        List<object?> l => "[" + string.Join(", ", l.Select(Repr)) + "]",
        JinjaNamespace => "<Namespace>",
        Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(kv => StringRepr(kv.Key) + ": " + Repr(kv.Value))) + "}",
        _ => "<function>",
    };

    internal static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == Math.Floor(d) && Math.Abs(d) < 1e16) return d.ToString("0.0", CultureInfo.InvariantCulture);
        string r = d.ToString("R", CultureInfo.InvariantCulture);
        if (!r.Contains('E')) return r;
        // Python writes 1e-05 and 1e+16 (two-digit exponent, sign always).
        var parts = r.Split('E');
        int exponent = int.Parse(parts[1], CultureInfo.InvariantCulture);
        return $"{parts[0]}e{(exponent < 0 ? '-' : '+')}{Math.Abs(exponent):00}";
    }

    private static string StringRepr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var text = new StringBuilder().Append(quote);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': text.Append("\\\\"); break;
                case '\n': text.Append("\\n"); break;
                case '\r': text.Append("\\r"); break;
                case '\t': text.Append("\\t"); break;
                default:
                    if (c == quote) text.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) text.Append($"\\x{(int)c:x2}");
                    else text.Append(c);
                    break;
            }
        }
        return text.Append(quote).ToString();
    }

    /// <summary>
    /// Python's <c>json.dumps(value, ensure_ascii=False, indent=indent, separators=..., sort_keys=...)</c>, which
    /// transformers installs as <c>tojson</c>: ", " and ": " between items unless indented.
    /// </summary>
    internal static string ToJson(object? v, int? indent, string? itemSeparator = null, string? keySeparator = null, bool sortKeys = false)
    {
        var text = new StringBuilder();
        itemSeparator ??= indent is null ? ", " : ",";
        keySeparator ??= ": ";
        Write(v, 0);
        return text.ToString();

        void Write(object? value, int level)
        {
            switch (value)
            {
                case null: text.Append("null"); break;
                case bool b: text.Append(b ? "true" : "false"); break;
                case long l: text.Append(l.ToString(CultureInfo.InvariantCulture)); break;
                case double d: text.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d)); break;
                case string s: WriteString(s); break;
                case List<object?> list:
                    if (list.Count == 0) { text.Append("[]"); break; }
                    text.Append('[');
                    for (int i = 0; i < list.Count; i++)
                    {
                        if (i > 0) text.Append(itemSeparator);
                        NewLine(level + 1);
                        Write(list[i], level + 1);
                    }
                    NewLine(level);
                    text.Append(']');
                    break;
                case Dictionary<string, object?> dict:
                    if (dict.Count == 0) { text.Append("{}"); break; }
                    text.Append('{');
                    int n = 0;
                    foreach (var (key, item) in sortKeys ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal) : dict.AsEnumerable())
                    {
                        if (n++ > 0) text.Append(itemSeparator);
                        NewLine(level + 1);
                        WriteString(key);
                        text.Append(keySeparator);
                        Write(item, level + 1);
                    }
                    NewLine(level);
                    text.Append('}');
                    break;
                case Undefined u:
                    throw new JinjaException($"`{u.Name}` is undefined and cannot be written as JSON");
                default:
                    throw new JinjaException($"a {TypeName(value)} cannot be written as JSON");
            }
        }

        void NewLine(int level)
        {
            if (indent is { } width) text.Append('\n').Append(' ', width * level);
        }

        void WriteString(string s)
        {
            text.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': text.Append("\\\""); break;
                    case '\\': text.Append("\\\\"); break;
                    case '\n': text.Append("\\n"); break;
                    case '\r': text.Append("\\r"); break;
                    case '\t': text.Append("\\t"); break;
                    case '\b': text.Append("\\b"); break;
                    case '\f': text.Append("\\f"); break;
                    default:
                        if (c < 0x20) text.Append($"\\u{(int)c:x4}");
                        else text.Append(c);
                        break;
                }
            }
            text.Append('"');
        }
    }

    /// <summary>Python's <c>==</c>: numbers by value (True == 1), strings by code units, lists and dicts item by item.</summary>
    internal static bool PyEquals(object? a, object? b)
    {
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (IsNumber(a) && IsNumber(b)) return ToDouble(a) == ToDouble(b);
        return (a, b) switch
        {
            (null, null) => true,
            (string x, string y) => x == y,
            (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => PyEquals(p.First, p.Second)),
            (Dictionary<string, object?> x, Dictionary<string, object?> y) => x.Count == y.Count
                && x.All(kv => y.TryGetValue(kv.Key, out var other) && PyEquals(kv.Value, other)),
            _ => ReferenceEquals(a, b),
        };
    }

    internal static bool IsNumber(object? v) => v is long or double or bool;

    internal static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new JinjaException($"expected a number, got {TypeName(v)}"),
    };

    /// <summary>Python's ordering for &lt; and sorting: numbers, strings (by code point), lists item by item.</summary>
    internal static int Compare(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b)) return ToDouble(a).CompareTo(ToDouble(b));
        if (a is string x && b is string y) return string.CompareOrdinal(x, y);
        if (a is List<object?> la && b is List<object?> lb)
        {
            for (int i = 0; i < Math.Min(la.Count, lb.Count); i++)
            {
                int c = Compare(la[i], lb[i]);
                if (c != 0) return c;
            }
            return la.Count.CompareTo(lb.Count);
        }
        throw new JinjaException($"'<' is not supported between {TypeName(a)} and {TypeName(b)}");
    }

    /// <summary>What <c>for</c> iterates: list items, dict keys, string characters (code points); nothing for undefined.</summary>
    internal static IEnumerable<object?> Iterate(object? v) => v switch
    {
        Undefined => [],
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys.Cast<object?>(),
        string s => s.EnumerateRunes().Select(r => (object?)r.ToString()),
        _ => throw new JinjaException($"a {TypeName(v)} is not iterable"),
    };

    /// <summary>Python's <c>len</c>: code points of a string.</summary>
    internal static long Length(object? v) => v switch
    {
        Undefined => 0,
        string s => s.EnumerateRunes().LongCount(),
        List<object?> l => l.Count,
        Dictionary<string, object?> d => d.Count,
        _ => throw new JinjaException($"a {TypeName(v)} has no length"),
    };
}
