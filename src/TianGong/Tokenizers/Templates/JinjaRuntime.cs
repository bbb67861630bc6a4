using System.Text;

namespace TianGong.Tokenizers.Templates;

/// <summary>
/// Renders parsed statements. Scoping follows Jinja2: a <c>for</c> loop and a macro call have their own scope (so a
/// <c>set</c> inside a loop does not leak out, hence <c>namespace()</c>), <c>if</c> does not.
/// </summary>
internal sealed class JinjaRuntime(string where)
{
    private enum Flow { Normal, Break, Continue }

    private sealed class Scope(Scope? parent)
    {
        private readonly Scope? parent = parent;
        public readonly Dictionary<string, object?> Variables = [];

        public bool TryGet(string name, out object? value)
        {
            for (var s = this; s is not null; s = s.parent)
                if (s.Variables.TryGetValue(name, out value)) return true;
            value = null;
            return false;
        }
    }

    private Scope root = new(null);
    private int line;

    public string Render(IReadOnlyList<Node> template, IReadOnlyDictionary<string, object?> variables)
    {
        root = new Scope(null);
        foreach (var (name, value) in JinjaBuiltins.Globals()) root.Variables[name] = value;
        foreach (var (name, value) in variables) root.Variables[name] = value;
        var output = new StringBuilder();
        try
        {
            Execute(template, root, output);
        }
        catch (JinjaRaisedException)
        {
            throw;
        }
        catch (JinjaException e)
        {
            throw new JinjaException($"{where}: line {line}: {e.Message}");
        }
        return output.ToString();
    }

    private Flow Execute(IReadOnlyList<Node> nodes, Scope scope, StringBuilder output)
    {
        foreach (var node in nodes)
        {
            line = node.Line;
            switch (node)
            {
                case TextNode text:
                    output.Append(text.Text);
                    break;
                case OutputNode o:
                    output.Append(JinjaValue.Str(Evaluate(o.Value, scope)));
                    break;
                case IfNode i:
                {
                    var body = i.Else;
                    foreach (var (condition, branch) in i.Branches)
                    {
                        if (JinjaValue.IsTrue(Evaluate(condition, scope))) { body = branch; break; }
                    }
                    if (body is not null && Execute(body, scope, output) is var flow && flow != Flow.Normal) return flow;
                    break;
                }
                case ForNode f:
                    ExecuteFor(f, scope, output);
                    break;
                case SetNode s:
                    Assign(s, scope);
                    break;
                case SetBlockNode b:
                {
                    var captured = new StringBuilder();
                    Execute(b.Body, scope, captured);
                    scope.Variables[b.Target] = captured.ToString();
                    break;
                }
                case MacroNode m:
                    scope.Variables[m.Name] = MakeMacro(m, scope);
                    break;
                case BlockNode block:
                    if (Execute(block.Body, scope, output) is var blockFlow && blockFlow != Flow.Normal) return blockFlow;
                    break;
                case BreakNode:
                    return Flow.Break;
                case ContinueNode:
                    return Flow.Continue;
            }
        }
        return Flow.Normal;
    }

    private void Assign(SetNode s, Scope scope)
    {
        var value = Evaluate(s.Value, scope);
        if (s.Attribute is not null)
        {
            if (!scope.TryGet(s.Targets[0], out var target) || target is not JinjaNamespace ns)
                throw new JinjaException($"`{s.Targets[0]}.{s.Attribute}` can only be set when `{s.Targets[0]}` is a namespace()");
            ns[s.Attribute] = value;
            return;
        }
        if (s.Targets.Count == 1) { scope.Variables[s.Targets[0]] = value; return; }
        var items = JinjaValue.Iterate(value).ToList();
        if (items.Count != s.Targets.Count) throw new JinjaException($"cannot unpack {items.Count} values into {s.Targets.Count} names");
        for (int i = 0; i < items.Count; i++) scope.Variables[s.Targets[i]] = items[i];
    }

    private void ExecuteFor(ForNode f, Scope scope, StringBuilder output)
    {
        var items = JinjaValue.Iterate(Evaluate(f.Iterable, scope)).ToList();
        var loopScope = new Scope(scope);
        if (f.Filter is not null)
        {
            items = items.Where(item =>
            {
                Bind(loopScope, f.Targets, item);
                return JinjaValue.IsTrue(Evaluate(f.Filter, loopScope));
            }).ToList();
        }
        if (items.Count == 0)
        {
            if (f.Else is not null) Execute(f.Else, scope, output);
            return;
        }
        for (int i = 0; i < items.Count; i++)
        {
            Bind(loopScope, f.Targets, items[i]);
            loopScope.Variables["loop"] = LoopVariable(items, i);
            if (Execute(f.Body, loopScope, output) == Flow.Break) break;
        }
    }

    private static void Bind(Scope scope, IReadOnlyList<string> targets, object? item)
    {
        if (targets.Count == 1) { scope.Variables[targets[0]] = item; return; }
        var parts = JinjaValue.Iterate(item).ToList();
        if (parts.Count != targets.Count) throw new JinjaException($"cannot unpack {parts.Count} values into {targets.Count} loop variables");
        for (int i = 0; i < parts.Count; i++) scope.Variables[targets[i]] = parts[i];
    }

    private static Dictionary<string, object?> LoopVariable(List<object?> items, int i) => new()
    {
        ["index"] = (long)(i + 1),
        ["index0"] = (long)i,
        ["revindex"] = (long)(items.Count - i),
        ["revindex0"] = (long)(items.Count - i - 1),
        ["first"] = i == 0,
        ["last"] = i == items.Count - 1,
        ["length"] = (long)items.Count,
        ["previtem"] = i > 0 ? items[i - 1] : new Undefined("loop.previtem"),
        ["nextitem"] = i + 1 < items.Count ? items[i + 1] : new Undefined("loop.nextitem"),
        ["cycle"] = (JinjaFunction)((args, _) => args.Count == 0 ? throw new JinjaException("loop.cycle needs arguments") : args[i % args.Count]),
    };

    private JinjaFunction MakeMacro(MacroNode m, Scope definedIn) => (args, kwargs) =>
    {
        var scope = new Scope(definedIn);
        for (int p = 0; p < m.Parameters.Count; p++)
        {
            var (name, fallback) = m.Parameters[p];
            scope.Variables[name] = p < args.Count ? args[p]
                : kwargs.TryGetValue(name, out var value) ? value
                : fallback is not null ? Evaluate(fallback, scope) : new Undefined(name);
        }
        var output = new StringBuilder();
        int callerLine = line;
        Execute(m.Body, scope, output);
        line = callerLine;
        return output.ToString();
    };

    private object? Evaluate(Expr expr, Scope scope)
    {
        switch (expr)
        {
            case LiteralExpr l:
                return l.Value;
            case NameExpr n:
                return scope.TryGet(n.Name, out var value) ? value : new Undefined(n.Name);
            case ListExpr l:
                return l.Items.Select(i => Evaluate(i, scope)).ToList();
            case DictExpr d:
            {
                var dict = new Dictionary<string, object?>();
                foreach (var (k, v) in d.Items)
                    dict[Evaluate(k, scope) is string key ? key : throw new JinjaException("dictionary keys must be strings")] = Evaluate(v, scope);
                return dict;
            }
            case AttributeExpr a:
                return JinjaBuiltins.GetAttribute(Evaluate(a.Target, scope), a.Name);
            case ItemExpr i:
                return JinjaBuiltins.GetItem(Evaluate(i.Target, scope), Evaluate(i.Key, scope));
            case SliceExpr s:
                return JinjaBuiltins.Slice(Evaluate(s.Target, scope), Optional(s.Start), Optional(s.Stop), Optional(s.Step));
            case CallExpr c:
            {
                var function = Evaluate(c.Function, scope);
                var args = c.Args.Select(a => Evaluate(a, scope)).ToList();
                var kwargs = c.Kwargs.ToDictionary(k => k.Name, k => Evaluate(k.Value, scope));
                return function switch
                {
                    JinjaFunction f => f(args, kwargs),
                    Undefined u => throw new JinjaException($"`{u.Name}` is undefined and cannot be called"),
                    _ => throw new JinjaException($"a {JinjaValue.TypeName(function)} cannot be called"),
                };
            }
            case FilterExpr f:
                return JinjaBuiltins.Filter(f.Name, Evaluate(f.Value, scope), f.Args.Select(a => Evaluate(a, scope)).ToList(),
                    f.Kwargs.ToDictionary(k => k.Name, k => Evaluate(k.Value, scope)));
            case TestExpr t:
                return JinjaBuiltins.Test(t.Name, Evaluate(t.Value, scope), t.Args.Select(a => Evaluate(a, scope)).ToList()) != t.Negated;
            case UnaryExpr u:
            {
                var operand = Evaluate(u.Operand, scope);
                return u.Op switch
                {
                    "not" => !JinjaValue.IsTrue(operand),
                    "-" => operand is long l ? (object)(-l) : -JinjaValue.ToDouble(Defined(operand)),
                    _ => operand,
                };
            }
            case BinaryExpr { Op: "and" } b:
            {
                var left = Evaluate(b.Left, scope);
                return JinjaValue.IsTrue(left) ? Evaluate(b.Right, scope) : left;
            }
            case BinaryExpr { Op: "or" } b:
            {
                var left = Evaluate(b.Left, scope);
                return JinjaValue.IsTrue(left) ? left : Evaluate(b.Right, scope);
            }
            case BinaryExpr b:
                return JinjaBuiltins.Arithmetic(b.Op, Evaluate(b.Left, scope), Evaluate(b.Right, scope));
            case CompareExpr c:
            {
                var left = Evaluate(c.First, scope);
                foreach (var (op, rightExpr) in c.Rest)
                {
                    var right = Evaluate(rightExpr, scope);
                    if (!JinjaBuiltins.CompareOp(op, left, right)) return false;
                    left = right;
                }
                return true;
            }
            case ConditionalExpr c:
                return JinjaValue.IsTrue(Evaluate(c.Condition, scope)) ? Evaluate(c.Then, scope)
                    : c.Else is not null ? Evaluate(c.Else, scope) : new Undefined("else");
            default:
                throw new JinjaException($"cannot evaluate {expr.GetType().Name}");
        }

        object? Optional(Expr? e) => e is null ? null : Evaluate(e, scope);
    }

    private static object? Defined(object? v) => v is Undefined u ? throw new JinjaException($"`{u.Name}` is undefined") : v;
}
