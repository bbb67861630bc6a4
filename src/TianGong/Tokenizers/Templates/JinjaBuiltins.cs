using System.Globalization;
using System.Net;
using System.Text;

namespace TianGong.Tokenizers.Templates;

/// <summary>
/// Operators, filters, tests, globals and the Python methods (str.strip, dict.items...) that published chat templates
/// use, with Jinja2/Python semantics. As transformers' ImmutableSandboxedEnvironment, nothing mutates lists or dicts.
/// </summary>
internal static class JinjaBuiltins
{
    private static readonly IReadOnlyDictionary<string, object?> NoKwargs = new Dictionary<string, object?>();

    public static IEnumerable<KeyValuePair<string, object?>> Globals() =>
    [
        new("raise_exception", (JinjaFunction)((args, _) => throw new JinjaRaisedException(args.Count > 0 ? JinjaValue.Str(args[0]) : "raise_exception"))),
        new("namespace", (JinjaFunction)((args, kwargs) =>
        {
            var ns = new JinjaNamespace();
            if (args is [Dictionary<string, object?> initial]) foreach (var (k, v) in initial) ns[k] = v;
            foreach (var (k, v) in kwargs) ns[k] = v;
            return ns;
        })),
        new("range", (JinjaFunction)((args, _) =>
        {
            long start = 0, stop, step = 1;
            if (args.Count == 1) stop = Int(args[0]);
            else { start = Int(args[0]); stop = Int(args[1]); if (args.Count > 2) step = Int(args[2]); }
            if (step == 0) throw new JinjaException("range() step must not be zero");
            var result = new List<object?>();
            for (long i = start; step > 0 ? i < stop : i > stop; i += step) result.Add(i);
            return result;
        })),
        new("dict", (JinjaFunction)((args, kwargs) =>
        {
            var d = args is [Dictionary<string, object?> initial] ? new Dictionary<string, object?>(initial) : new Dictionary<string, object?>();
            foreach (var (k, v) in kwargs) d[k] = v;
            return d;
        })),
        // transformers' strftime_now: the current local time formatted with Python's strftime codes.
        new("strftime_now", (JinjaFunction)((args, _) => StrFTime(DateTime.Now, args.Count > 0 ? JinjaValue.Str(args[0]) : ""))),
    ];

    private static long Int(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d => (long)d,
        _ => throw new JinjaException($"expected an integer, got {JinjaValue.TypeName(v)}"),
    };

    private static JinjaFunction Method(Func<IReadOnlyList<object?>, IReadOnlyDictionary<string, object?>, object?> body) => (a, k) => body(a, k);

    /// <summary><c>value.name</c>: a method or attribute first, then an item, else undefined (errors only on undefined).</summary>
    public static object? GetAttribute(object? target, string name)
    {
        switch (target)
        {
            case Undefined u:
                throw new JinjaException($"`{u.Name}` is undefined, so it has no attribute `{name}`");
            case JinjaNamespace ns:
                return ns.TryGetValue(name, out var nv) ? nv : new Undefined(name);
            case Dictionary<string, object?> d:
                if (DictMethod(d, name) is { } m) return m;
                return d.TryGetValue(name, out var v) ? v : new Undefined(name);
            case string s:
                return (object?)StringMethod(s, name) ?? new Undefined(name);
            default:
                return new Undefined(name);
        }
    }

    /// <summary><c>value[key]</c>: an item first (negative list indices count from the end), then an attribute.</summary>
    public static object? GetItem(object? target, object? key)
    {
        switch (target, key)
        {
            case (Undefined u, _):
                throw new JinjaException($"`{u.Name}` is undefined, so it has no item {JinjaValue.Repr(key)}");
            case (List<object?> list, long or bool):
            {
                long i = Int(key);
                if (i < 0) i += list.Count;
                return i >= 0 && i < list.Count ? list[(int)i] : new Undefined($"[{key}]");
            }
            case (string s, long or bool):
            {
                var chars = CodePoints(s);
                long i = Int(key);
                if (i < 0) i += chars.Count;
                return i >= 0 && i < chars.Count ? chars[(int)i] : new Undefined($"[{key}]");
            }
            case (Dictionary<string, object?> d, string k):
                return d.TryGetValue(k, out var v) ? v : target is JinjaNamespace ? new Undefined(k) : (object?)DictMethod(d, k) ?? new Undefined(k);
            case (_, string name):
                return GetAttribute(target, name);
            default:
                return new Undefined($"[{JinjaValue.Repr(key)}]");
        }
    }

    private static List<string> CodePoints(string s) => [.. s.EnumerateRunes().Select(r => r.ToString())];

    /// <summary>Python slicing of lists and strings.</summary>
    public static object? Slice(object? target, object? start, object? stop, object? step)
    {
        long stepValue = step is null ? 1 : Int(step);
        if (stepValue == 0) throw new JinjaException("slice step cannot be zero");
        List<object?> items = target switch
        {
            List<object?> l => l,
            string s => [.. CodePoints(s)],
            Undefined u => throw new JinjaException($"`{u.Name}` is undefined and cannot be sliced"),
            _ => throw new JinjaException($"a {JinjaValue.TypeName(target)} cannot be sliced"),
        };
        int n = items.Count;
        long Clamp(object? v, long absent, long low, long high)
        {
            if (v is null) return absent;
            long i = Int(v);
            if (i < 0) i += n;
            return Math.Clamp(i, low, high);
        }
        var result = new List<object?>();
        if (stepValue > 0)
        {
            for (long i = Clamp(start, 0, 0, n), end = Clamp(stop, n, 0, n); i < end; i += stepValue) result.Add(items[(int)i]);
        }
        else
        {
            for (long i = Clamp(start, n - 1, -1, n - 1), end = Clamp(stop, -1, -1, n - 1); i > end; i += stepValue) result.Add(items[(int)i]);
        }
        return target is string ? string.Concat(result.Cast<string>()) : result;
    }

    public static object? Arithmetic(string op, object? a, object? b)
    {
        if (op == "~") return JinjaValue.Str(a) + JinjaValue.Str(b);
        if (a is Undefined ua) throw new JinjaException($"`{ua.Name}` is undefined (used with `{op}`)");
        if (b is Undefined ub) throw new JinjaException($"`{ub.Name}` is undefined (used with `{op}`)");
        switch (op, a, b)
        {
            case ("+", string x, string y): return x + y;
            case ("+", List<object?> x, List<object?> y): return x.Concat(y).ToList();
            case ("*", string x, long or bool): return string.Concat(Enumerable.Repeat(x, (int)Math.Max(0, Int(b))));
            case ("*", List<object?> x, long or bool): return Enumerable.Range(0, (int)Math.Max(0, Int(b))).SelectMany(_ => x).ToList();
        }
        if (!JinjaValue.IsNumber(a) || !JinjaValue.IsNumber(b))
            throw new JinjaException($"unsupported operand types for {op}: {JinjaValue.TypeName(a)} and {JinjaValue.TypeName(b)}");
        bool integers = a is long or bool && b is long or bool;
        switch (op)
        {
            case "+": return integers ? (object)(Int(a) + Int(b)) : JinjaValue.ToDouble(a) + JinjaValue.ToDouble(b);
            case "-": return integers ? (object)(Int(a) - Int(b)) : JinjaValue.ToDouble(a) - JinjaValue.ToDouble(b);
            case "*": return integers ? (object)(Int(a) * Int(b)) : JinjaValue.ToDouble(a) * JinjaValue.ToDouble(b);
            case "/":
                if (JinjaValue.ToDouble(b) == 0) throw new JinjaException("division by zero");
                return JinjaValue.ToDouble(a) / JinjaValue.ToDouble(b);
            case "//":
                if (JinjaValue.ToDouble(b) == 0) throw new JinjaException("division by zero");
                return integers ? (object)(long)Math.Floor((double)Int(a) / Int(b)) : Math.Floor(JinjaValue.ToDouble(a) / JinjaValue.ToDouble(b));
            case "%":
                if (JinjaValue.ToDouble(b) == 0) throw new JinjaException("modulo by zero");
                if (integers) { long m = Int(a) % Int(b); return (object)(m != 0 && (m < 0) != (Int(b) < 0) ? m + Int(b) : m); }
                double r = JinjaValue.ToDouble(a) % JinjaValue.ToDouble(b);
                return r != 0 && (r < 0) != (JinjaValue.ToDouble(b) < 0) ? r + JinjaValue.ToDouble(b) : r;
            case "**":
                return integers && Int(b) >= 0 ? (object)(long)Math.Pow(Int(a), Int(b)) : Math.Pow(JinjaValue.ToDouble(a), JinjaValue.ToDouble(b));
        }
        throw new JinjaException($"unknown operator {op}");
    }

    public static bool CompareOp(string op, object? a, object? b) => op switch
    {
        "==" => JinjaValue.PyEquals(a, b),
        "!=" => !JinjaValue.PyEquals(a, b),
        "<" => JinjaValue.Compare(a, b) < 0,
        ">" => JinjaValue.Compare(a, b) > 0,
        "<=" => JinjaValue.Compare(a, b) <= 0,
        ">=" => JinjaValue.Compare(a, b) >= 0,
        "in" => Contains(b, a),
        "not in" => !Contains(b, a),
        _ => throw new JinjaException($"unknown comparison {op}"),
    };

    private static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw new JinjaException($"'in <string>' requires a string, not {JinjaValue.TypeName(item)}"),
        List<object?> l => l.Any(x => JinjaValue.PyEquals(x, item)),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        Undefined => false,
        _ => throw new JinjaException($"a {JinjaValue.TypeName(container)} does not support `in`"),
    };

    private static JinjaFunction? DictMethod(Dictionary<string, object?> d, string name) => name switch
    {
        "items" => Method((_, _) => d.Select(kv => (object?)new PyTuple(kv.Key, kv.Value)).ToList()),
        "keys" => Method((_, _) => d.Keys.Select(k => (object?)k).ToList()),
        "values" => Method((_, _) => d.Values.ToList()),
        "get" => Method((args, _) => args.Count > 0 && args[0] is string k && d.TryGetValue(k, out var v) ? v : args.Count > 1 ? args[1] : null),
        _ => null,
    };

    private static JinjaFunction? StringMethod(string s, string name) => name switch
    {
        "strip" => Method((a, _) => PyStrip(s, a.Count > 0 ? a[0] as string : null, true, true)),
        "lstrip" => Method((a, _) => PyStrip(s, a.Count > 0 ? a[0] as string : null, true, false)),
        "rstrip" => Method((a, _) => PyStrip(s, a.Count > 0 ? a[0] as string : null, false, true)),
        "upper" => Method((_, _) => s.ToUpperInvariant()),
        "lower" => Method((_, _) => s.ToLowerInvariant()),
        "title" => Method((_, _) => Title(s)),
        "capitalize" => Method((_, _) => Capitalize(s)),
        "startswith" => Method((a, _) => Prefixes(a).Any(p => s.StartsWith(p, StringComparison.Ordinal))),
        "endswith" => Method((a, _) => Prefixes(a).Any(p => s.EndsWith(p, StringComparison.Ordinal))),
        "replace" => Method((a, _) => Replace(s, JinjaValue.Str(a[0]), JinjaValue.Str(a[1]), a.Count > 2 ? Int(a[2]) : -1)),
        "split" => Method((a, k) => Split(s, a.Count > 0 ? a[0] as string : k.GetValueOrDefault("sep") as string,
            a.Count > 1 ? Int(a[1]) : k.TryGetValue("maxsplit", out var m) ? Int(m) : -1)),
        "splitlines" => Method((_, _) => s.Split('\n').Select(l => (object?)l.TrimEnd('\r')).ToList() is var lines && s.EndsWith('\n') ? lines[..^1] : lines),
        "find" => Method((a, _) => (long)s.IndexOf(JinjaValue.Str(a[0]), StringComparison.Ordinal)),
        "count" => Method((a, _) => (long)(JinjaValue.Str(a[0]) is { Length: > 0 } sub ? (s.Length - s.Replace(sub, "").Length) / sub.Length : s.Length + 1)),
        "join" => Method((a, _) => string.Join(s, JinjaValue.Iterate(a[0]).Select(JinjaValue.Str))),
        "isdigit" => Method((_, _) => s.Length > 0 && s.All(char.IsDigit)),
        "isspace" => Method((_, _) => s.Length > 0 && s.All(IsPySpace)),
        _ => null,
    };

    private static IEnumerable<string> Prefixes(IReadOnlyList<object?> args) => args.Count == 0 ? []
        : args[0] is List<object?> list ? list.Select(JinjaValue.Str) : [JinjaValue.Str(args[0])];

    private static bool IsPySpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1c' and <= '\x1f';

    /// <summary>Python's str.strip(chars): whitespace (str.isspace) by default.</summary>
    public static string PyStrip(string s, string? chars, bool left, bool right)
    {
        bool Strip(char c) => chars is null ? IsPySpace(c) : chars.Contains(c);
        int start = 0, end = s.Length;
        if (left) while (start < end && Strip(s[start])) start++;
        if (right) while (end > start && Strip(s[end - 1])) end--;
        return s[start..end];
    }

    private static string Replace(string s, string old, string replacement, long count)
    {
        if (count < 0) return old.Length == 0 ? string.Join(replacement, ["", .. CodePoints(s), ""]) : s.Replace(old, replacement, StringComparison.Ordinal);
        var text = new StringBuilder();
        int at = 0;
        for (long n = 0; n < count && old.Length > 0; n++)
        {
            int found = s.IndexOf(old, at, StringComparison.Ordinal);
            if (found < 0) break;
            text.Append(s, at, found - at).Append(replacement);
            at = found + old.Length;
        }
        return text.Append(s, at, s.Length - at).ToString();
    }

    private static List<object?> Split(string s, string? separator, long maxSplit)
    {
        if (separator is null)
        {
            var words = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Where(w => w.Any(c => !IsPySpace(c)));
            if (maxSplit < 0) return [.. words];
            // With maxsplit, the rest keeps its inner whitespace (leading whitespace removed).
            var result = new List<object?>();
            string rest = PyStrip(s, null, true, false);
            while (result.Count < maxSplit && rest.Length > 0)
            {
                int i = 0;
                while (i < rest.Length && !IsPySpace(rest[i])) i++;
                result.Add(rest[..i]);
                rest = PyStrip(rest[i..], null, true, false);
            }
            if (rest.Length > 0) result.Add(rest);
            return result;
        }
        if (separator.Length == 0) throw new JinjaException("empty separator");
        var parts = maxSplit < 0 ? s.Split(separator) : s.Split(separator, (int)maxSplit + 1);
        return [.. parts];
    }

    private static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>Jinja's title: each word's first letter upper, the rest lower (words start after spaces and punctuation).</summary>
    private static string Title(string s)
    {
        var text = new StringBuilder(s.Length);
        bool start = true;
        foreach (char c in s)
        {
            text.Append(start ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
            start = !char.IsLetterOrDigit(c) && c != '\'';
        }
        return text.ToString();
    }

    public static object? Filter(string name, object? value, List<object?> args, Dictionary<string, object?> kwargs)
    {
        object? Arg(int i, string key, object? absent = null) => i < args.Count ? args[i] : kwargs.TryGetValue(key, out var v) ? v : absent;
        switch (name)
        {
            case "tojson":
            {
                object? indent = Arg(0, "indent");
                var separators = Arg(99, "separators") as List<object?>;
                return JinjaValue.ToJson(value, indent is null ? null : (int)Int(indent), separators?[0] as string, separators?[1] as string,
                    JinjaValue.IsTrue(Arg(99, "sort_keys", false)));
            }
            case "trim":
                return PyStrip(JinjaValue.Str(value), Arg(0, "chars") as string, true, true);
            case "length" or "count":
                return JinjaValue.Length(value);
            case "string":
                return JinjaValue.Str(value);
            case "upper":
                return JinjaValue.Str(value).ToUpperInvariant();
            case "lower":
                return JinjaValue.Str(value).ToLowerInvariant();
            case "title":
                return Title(JinjaValue.Str(value));
            case "capitalize":
                return Capitalize(JinjaValue.Str(value));
            case "replace":
                return Replace(JinjaValue.Str(value), JinjaValue.Str(Arg(0, "old")), JinjaValue.Str(Arg(1, "new")), Arg(2, "count") is { } c ? Int(c) : -1);
            case "join":
            {
                var items = JinjaValue.Iterate(value);
                if (Arg(1, "attribute") is string attribute) items = items.Select(i => GetItem(i, attribute));
                return string.Join(JinjaValue.Str(Arg(0, "d", "")), items.Select(JinjaValue.Str));
            }
            case "first":
                return JinjaValue.Iterate(value).Cast<object?>().DefaultIfEmpty(new Undefined("first")).First();
            case "last":
                return JinjaValue.Iterate(value).Cast<object?>().DefaultIfEmpty(new Undefined("last")).Last();
            case "default" or "d":
            {
                bool boolean = JinjaValue.IsTrue(Arg(1, "boolean", false));
                return value is Undefined || (boolean && !JinjaValue.IsTrue(value)) ? Arg(0, "default_value", "") : value;
            }
            case "list":
                return JinjaValue.Iterate(value).ToList();
            case "int":
                return value switch
                {
                    long l => l,
                    bool b => b ? 1L : 0L,
                    double d => (long)d,
                    string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) => l,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => (long)d,
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return value switch
                {
                    long or double or bool => JinjaValue.ToDouble(value),
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
                    _ => Arg(0, "default", 0.0),
                };
            case "abs":
                return value is long l2 ? (object)Math.Abs(l2) : Math.Abs(JinjaValue.ToDouble(value));
            case "round":
            {
                int digits = (int)Int(Arg(0, "precision", 0L));
                string method = JinjaValue.Str(Arg(1, "method", "common"));
                double x = JinjaValue.ToDouble(value), scale = Math.Pow(10, digits);
                return method switch
                {
                    "ceil" => Math.Ceiling(x * scale) / scale,
                    "floor" => Math.Floor(x * scale) / scale,
                    _ => Math.Round(x, digits, MidpointRounding.AwayFromZero),
                };
            }
            case "items":
                return value is Dictionary<string, object?> d2 ? d2.Select(kv => (object?)new PyTuple(kv.Key, kv.Value)).ToList()
                    : value is Undefined ? new List<object?>() : throw new JinjaException($"items needs a dict, got {JinjaValue.TypeName(value)}");
            case "dictsort":
                return value is Dictionary<string, object?> d3
                    ? d3.OrderBy(kv => kv.Key, StringComparer.OrdinalIgnoreCase).Select(kv => (object?)new PyTuple(kv.Key, kv.Value)).ToList()
                    : throw new JinjaException($"dictsort needs a dict, got {JinjaValue.TypeName(value)}");
            case "selectattr" or "rejectattr":
            {
                string attribute = JinjaValue.Str(Arg(0, "attribute"));
                bool keep = name == "selectattr";
                return JinjaValue.Iterate(value).Where(item =>
                {
                    var v = GetItem(item, attribute);
                    bool pass = args.Count > 1 ? Test(JinjaValue.Str(args[1]), v, args.Skip(2).ToList()) : JinjaValue.IsTrue(v);
                    return pass == keep;
                }).ToList();
            }
            case "select" or "reject":
            {
                bool keep = name == "select";
                return JinjaValue.Iterate(value).Where(item =>
                    (args.Count > 0 ? Test(JinjaValue.Str(args[0]), item, args.Skip(1).ToList()) : JinjaValue.IsTrue(item)) == keep).ToList();
            }
            case "map":
            {
                if (kwargs.TryGetValue("attribute", out var attribute))
                    return JinjaValue.Iterate(value).Select(i => GetItem(i, attribute) is Undefined && kwargs.TryGetValue("default", out var dv) ? dv : GetItem(i, attribute)).ToList();
                if (args.Count == 0) throw new JinjaException("map needs a filter name or attribute=");
                string filter = JinjaValue.Str(args[0]);
                return JinjaValue.Iterate(value).Select(i => Filter(filter, i, args.Skip(1).ToList(), [])).ToList();
            }
            case "unique":
            {
                var result = new List<object?>();
                foreach (var item in JinjaValue.Iterate(value))
                {
                    var key = item is string s ? s.ToLowerInvariant() : item;
                    if (!result.Any(r => JinjaValue.PyEquals(r is string rs ? rs.ToLowerInvariant() : r, key))) result.Add(item);
                }
                return result;
            }
            case "reverse":
                return value is string rs2 ? string.Concat(CodePoints(rs2).AsEnumerable().Reverse()) : JinjaValue.Iterate(value).Reverse().ToList();
            case "sort":
            {
                bool reverse = JinjaValue.IsTrue(Arg(0, "reverse", false));
                bool caseSensitive = JinjaValue.IsTrue(Arg(1, "case_sensitive", false));
                var attribute = Arg(2, "attribute");
                object? Key(object? item)
                {
                    var k = attribute is null ? item : GetItem(item, attribute);
                    return !caseSensitive && k is string s ? s.ToLowerInvariant() : k;
                }
                var sorted = JinjaValue.Iterate(value).ToList();
                var ordered = sorted.Select((item, i) => (item, i)).OrderBy(p => Key(p.item), Comparer<object?>.Create(JinjaValue.Compare)).ThenBy(p => p.i).Select(p => p.item).ToList();
                if (reverse) ordered.Reverse();
                return ordered;
            }
            case "sum":
            {
                object? total = Arg(1, "start", 0L);
                var attribute = Arg(0, "attribute");
                foreach (var item in JinjaValue.Iterate(value)) total = Arithmetic("+", total, attribute is null ? item : GetItem(item, attribute));
                return total;
            }
            case "min" or "max":
            {
                var items = JinjaValue.Iterate(value).ToList();
                if (items.Count == 0) return new Undefined(name);
                var best = items[0];
                foreach (var item in items.Skip(1))
                    if ((JinjaValue.Compare(item, best) < 0) == (name == "min") && JinjaValue.Compare(item, best) != 0) best = item;
                return best;
            }
            case "safe":
                return value;
            case "e" or "escape":
                return WebUtility.HtmlEncode(JinjaValue.Str(value));
            case "indent":
            {
                string pad = Arg(0, "width", 4L) is string w ? w : new string(' ', (int)Int(Arg(0, "width", 4L)));
                bool first = JinjaValue.IsTrue(Arg(1, "first", false)), blank = JinjaValue.IsTrue(Arg(2, "blank", false));
                var lines = JinjaValue.Str(value).Split('\n');
                for (int i = 0; i < lines.Length; i++)
                    if ((i > 0 || first) && (blank || lines[i].Trim().Length > 0)) lines[i] = pad + lines[i];
                return string.Join('\n', lines);
            }
            case "wordcount":
                // Jinja counts the matches of Python's \w+.
                return (long)System.Text.RegularExpressions.Regex.Count(JinjaValue.Str(value), @"[\p{L}\p{M}\p{Nd}\p{Pc}]+");
            case "attr":
                return GetAttribute(value, JinjaValue.Str(Arg(0, "name")));
            default:
                throw new JinjaException($"the filter `{name}` is not supported by TianGong's Jinja interpreter");
        }
    }

    public static bool Test(string name, object? value, List<object?> args) => name switch
    {
        "defined" => value is not Undefined,
        "undefined" => value is Undefined,
        "none" => value is null,
        "true" => value is true,
        "false" => value is false,
        "boolean" => value is bool,
        "string" => value is string,
        "number" => value is long or double,
        "integer" => value is long,
        "float" => value is double,
        "mapping" => value is Dictionary<string, object?>,
        "iterable" => value is string or List<object?> or Dictionary<string, object?>,
        "sequence" => value is string or List<object?> or Dictionary<string, object?>,
        "callable" => value is JinjaFunction,
        "odd" => Int(value) % 2 != 0,
        "even" => Int(value) % 2 == 0,
        "divisibleby" => Int(value) % Int(args[0]) == 0,
        "eq" or "equalto" or "==" => JinjaValue.PyEquals(value, args[0]),
        "ne" or "!=" => !JinjaValue.PyEquals(value, args[0]),
        "lt" or "lessthan" or "<" => JinjaValue.Compare(value, args[0]) < 0,
        "gt" or "greaterthan" or ">" => JinjaValue.Compare(value, args[0]) > 0,
        "le" or "<=" => JinjaValue.Compare(value, args[0]) <= 0,
        "ge" or ">=" => JinjaValue.Compare(value, args[0]) >= 0,
        "in" => Contains(args[0], value),
        "sameas" => ReferenceEquals(value, args[0]) || (value is null && args[0] is null) || (value is bool b && args[0] is bool c && b == c),
        "lower" => value is string s && s == s.ToLowerInvariant(),
        "upper" => value is string u && u == u.ToUpperInvariant(),
        _ => throw new JinjaException($"the test `{name}` is not supported by TianGong's Jinja interpreter"),
    };

    /// <summary>Python's strftime for the codes chat templates use.</summary>
    private static string StrFTime(DateTime time, string format)
    {
        var text = new StringBuilder();
        var invariant = CultureInfo.InvariantCulture;
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 == format.Length) { text.Append(format[i]); continue; }
            char code = format[++i];
            text.Append(code switch
            {
                'd' => time.ToString("dd", invariant),
                'm' => time.ToString("MM", invariant),
                'Y' => time.ToString("yyyy", invariant),
                'y' => time.ToString("yy", invariant),
                'b' => time.ToString("MMM", invariant),
                'B' => time.ToString("MMMM", invariant),
                'a' => time.ToString("ddd", invariant),
                'A' => time.ToString("dddd", invariant),
                'H' => time.ToString("HH", invariant),
                'I' => time.ToString("hh", invariant),
                'M' => time.ToString("mm", invariant),
                'S' => time.ToString("ss", invariant),
                'p' => time.ToString("tt", invariant),
                'j' => time.DayOfYear.ToString("000", invariant),
                '%' => "%",
                _ => "%" + code,
            });
        }
        return text.ToString();
    }
}
