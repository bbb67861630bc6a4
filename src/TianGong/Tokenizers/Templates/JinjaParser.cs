namespace TianGong.Tokenizers.Templates;

/// <summary>
/// Parses the segments of <see cref="JinjaLexer"/> into statements and expressions, with Jinja2's operator
/// precedence (conditional &lt; or &lt; and &lt; not &lt; comparison &lt; ~ &lt; + - &lt; * / // % &lt; ** &lt; unary &lt;
/// postfix, filters and tests).
/// </summary>
internal sealed class JinjaParser(IReadOnlyList<Segment> segments, string where)
{
    private int index;

    public List<Node> ParseTemplate()
    {
        var body = ParseBody(out var end);
        if (end is not null) throw Error(end, $"`{{% {end.Tokens[0].Text} %}}` without a block it ends");
        return body;
    }

    private JinjaException Error(Segment at, string message) => new($"{where}: line {at.Line}: {message}");

    /// <summary>Statements up to the first statement not handled here (returned in <paramref name="stop"/>), or the end.</summary>
    private List<Node> ParseBody(out Segment? stop, params string[] endTags)
    {
        var nodes = new List<Node>();
        while (index < segments.Count)
        {
            var segment = segments[index];
            switch (segment.Kind)
            {
                case SegmentKind.Text:
                    nodes.Add(new TextNode(segment.Text, segment.Line));
                    index++;
                    continue;
                case SegmentKind.Output:
                    index++;
                    nodes.Add(new OutputNode(ParseWhole(segment, 0), segment.Line));
                    continue;
            }
            if (segment.Tokens.Count == 0 || segment.Tokens[0].Kind != TokenKind.Name) throw Error(segment, "an empty or malformed `{% %}` tag");
            string keyword = segment.Tokens[0].Text;
            if (endTags.Contains(keyword))
            {
                stop = segment;
                return nodes;
            }
            index++;
            nodes.Add(keyword switch
            {
                "if" => ParseIf(segment),
                "for" => ParseFor(segment),
                "set" => ParseSet(segment),
                "macro" => ParseMacro(segment),
                "break" => new BreakNode(segment.Line),
                "continue" => new ContinueNode(segment.Line),
                "generation" => new BlockNode(ParseUntil(segment, "endgeneration"), segment.Line),
                _ when keyword.StartsWith("end", StringComparison.Ordinal) || keyword is "elif" or "else"
                    => throw Error(segment, $"`{{% {keyword} %}}` without the block it belongs to"),
                _ => throw Error(segment, $"the statement `{keyword}` is not supported by TianGong's Jinja interpreter"),
            });
        }
        stop = null;
        if (endTags.Length > 0) throw new JinjaException($"{where}: the template ends inside a block that needs `{{% {endTags[^1]} %}}`");
        return nodes;
    }

    private List<Node> ParseUntil(Segment opening, string endTag)
    {
        var body = ParseBody(out var stop, endTag);
        index++; // the end tag
        if (stop!.Tokens.Count != 1) throw Error(stop, $"`{{% {endTag} %}}` takes nothing after it");
        return body;
    }

    private IfNode ParseIf(Segment segment)
    {
        var branches = new List<(Expr, IReadOnlyList<Node>)>();
        var condition = ParseWhole(segment, 1);
        while (true)
        {
            var body = ParseBody(out var stop, "elif", "else", "endif");
            branches.Add((condition, body));
            index++;
            switch (stop!.Tokens[0].Text)
            {
                case "elif":
                    condition = ParseWhole(stop, 1);
                    continue;
                case "else":
                    var elseBody = ParseBody(out _, "endif");
                    index++;
                    return new IfNode(branches, elseBody, segment.Line);
                default:
                    return new IfNode(branches, null, segment.Line);
            }
        }
    }

    private ForNode ParseFor(Segment segment)
    {
        var tokens = new TokenReader(segment, 1, this);
        var targets = new List<string> { tokens.ExpectName() };
        while (tokens.Accept(",")) targets.Add(tokens.ExpectName());
        tokens.Expect("in");
        var iterable = tokens.ParseExpression(withCondition: false);
        Expr? filter = tokens.Accept("if") ? tokens.ParseExpression(withCondition: false) : null;
        tokens.Accept("recursive");
        tokens.ExpectEnd();
        var body = ParseBody(out var stop, "else", "endfor");
        index++;
        List<Node>? elseBody = null;
        if (stop!.Tokens[0].Text == "else")
        {
            elseBody = ParseBody(out _, "endfor");
            index++;
        }
        return new ForNode(targets, iterable, filter, body, elseBody, segment.Line);
    }

    private Node ParseSet(Segment segment)
    {
        var tokens = new TokenReader(segment, 1, this);
        var targets = new List<string> { tokens.ExpectName() };
        string? attribute = null;
        if (tokens.Accept(".")) attribute = tokens.ExpectName();
        while (attribute is null && tokens.Accept(",")) targets.Add(tokens.ExpectName());
        if (tokens.AtEnd)
        {
            if (targets.Count != 1 || attribute is not null) throw Error(segment, "a block `{% set %}` assigns one plain name");
            return new SetBlockNode(targets[0], ParseUntil(segment, "endset"), segment.Line);
        }
        tokens.Expect("=");
        var value = tokens.ParseTupleOrExpression();
        tokens.ExpectEnd();
        return new SetNode(targets, attribute, value, segment.Line);
    }

    private MacroNode ParseMacro(Segment segment)
    {
        var tokens = new TokenReader(segment, 1, this);
        string name = tokens.ExpectName();
        var parameters = new List<(string, Expr?)>();
        tokens.Expect("(");
        while (!tokens.Accept(")"))
        {
            string parameter = tokens.ExpectName();
            parameters.Add((parameter, tokens.Accept("=") ? tokens.ParseExpression() : null));
            if (!tokens.Accept(",")) { tokens.Expect(")"); break; }
        }
        tokens.ExpectEnd();
        return new MacroNode(name, parameters, ParseUntil(segment, "endmacro"), segment.Line);
    }

    private Expr ParseWhole(Segment segment, int from)
    {
        var tokens = new TokenReader(segment, from, this);
        var expr = tokens.ParseTupleOrExpression();
        tokens.ExpectEnd();
        return expr;
    }

    /// <summary>Recursive-descent expression parsing over one tag's tokens.</summary>
    private sealed class TokenReader(Segment segment, int position, JinjaParser parser)
    {
        private readonly IReadOnlyList<JinjaToken> tokens = segment.Tokens;

        private JinjaToken Peek(int ahead = 0) =>
            position + ahead < tokens.Count ? tokens[position + ahead] : new JinjaToken(TokenKind.End, "");

        public bool AtEnd => position >= tokens.Count;

        private JinjaToken Next() => AtEnd ? throw parser.Error(segment, "the tag ends too early") : tokens[position++];

        public bool Accept(string op)
        {
            if (!Peek().Is(op)) return false;
            position++;
            return true;
        }

        public void Expect(string op)
        {
            if (!Accept(op)) throw parser.Error(segment, $"expected `{op}`, found {Peek()}");
        }

        public string ExpectName()
        {
            var t = Next();
            return t.Kind == TokenKind.Name ? t.Text : throw parser.Error(segment, $"expected a name, found {t}");
        }

        public void ExpectEnd()
        {
            if (!AtEnd) throw parser.Error(segment, $"unexpected {Peek()}");
        }

        /// <summary>An expression, or several separated by commas (a tuple, as in <c>{% set a = 1, 2 %}</c>).</summary>
        public Expr ParseTupleOrExpression()
        {
            var first = ParseExpression();
            if (!Peek().Is(",")) return first;
            var items = new List<Expr> { first };
            while (Accept(",") && !AtEnd) items.Add(ParseExpression());
            return new ListExpr(items);
        }

        public Expr ParseExpression(bool withCondition = true)
        {
            var expr = ParseOr();
            while (withCondition && Accept("if"))
            {
                var condition = ParseOr();
                Expr? otherwise = Accept("else") ? ParseExpression() : null;
                expr = new ConditionalExpr(condition, expr, otherwise);
            }
            return expr;
        }

        private Expr ParseOr()
        {
            var left = ParseAnd();
            while (Accept("or")) left = new BinaryExpr("or", left, ParseAnd());
            return left;
        }

        private Expr ParseAnd()
        {
            var left = ParseNot();
            while (Accept("and")) left = new BinaryExpr("and", left, ParseNot());
            return left;
        }

        private Expr ParseNot() => Accept("not") ? new UnaryExpr("not", ParseNot()) : ParseCompare();

        private Expr ParseCompare()
        {
            var first = ParseConcat();
            var rest = new List<(string, Expr)>();
            while (true)
            {
                var t = Peek();
                if (t.Kind == TokenKind.Operator && t.Text is "==" or "!=" or "<" or ">" or "<=" or ">=") { position++; rest.Add((t.Text, ParseConcat())); }
                else if (t.Is("in")) { position++; rest.Add(("in", ParseConcat())); }
                else if (t.Is("not") && Peek(1).Is("in")) { position += 2; rest.Add(("not in", ParseConcat())); }
                else break;
            }
            return rest.Count == 0 ? first : new CompareExpr(first, rest);
        }

        private Expr ParseConcat()
        {
            var left = ParseAdd();
            while (Accept("~")) left = new BinaryExpr("~", left, ParseAdd());
            return left;
        }

        private Expr ParseAdd()
        {
            var left = ParseMultiply();
            while (Peek() is { Kind: TokenKind.Operator, Text: "+" or "-" } t) { position++; left = new BinaryExpr(t.Text, left, ParseMultiply()); }
            return left;
        }

        private Expr ParseMultiply()
        {
            var left = ParsePower();
            while (Peek() is { Kind: TokenKind.Operator, Text: "*" or "/" or "//" or "%" } t) { position++; left = new BinaryExpr(t.Text, left, ParsePower()); }
            return left;
        }

        private Expr ParsePower()
        {
            var left = ParseUnary();
            while (Accept("**")) left = new BinaryExpr("**", left, ParseUnary());
            return left;
        }

        private Expr ParseUnary()
        {
            if (Accept("-")) return new UnaryExpr("-", ParseUnary());
            if (Accept("+")) return new UnaryExpr("+", ParseUnary());
            return ParseFiltersAndTests(ParsePostfix(ParsePrimary()));
        }

        private Expr ParsePrimary()
        {
            var t = Next();
            switch (t.Kind)
            {
                case TokenKind.String:
                    string text = (string)t.Value!;
                    while (Peek().Kind == TokenKind.String) text += (string)Next().Value!; // adjacent literals concatenate
                    return new LiteralExpr(text);
                case TokenKind.Integer or TokenKind.Float:
                    return new LiteralExpr(t.Value);
                case TokenKind.Name:
                    return t.Text switch
                    {
                        "true" or "True" => new LiteralExpr(true),
                        "false" or "False" => new LiteralExpr(false),
                        "none" or "None" => new LiteralExpr(null),
                        _ => new NameExpr(t.Text),
                    };
            }
            if (t.Is("("))
            {
                if (Accept(")")) return new ListExpr([]);
                var first = ParseExpression();
                if (Accept(")")) return first;
                var items = new List<Expr> { first };
                while (Accept(",") && !Peek().Is(")")) items.Add(ParseExpression());
                Expect(")");
                return new ListExpr(items);
            }
            if (t.Is("["))
            {
                var items = new List<Expr>();
                while (!Accept("]"))
                {
                    items.Add(ParseExpression());
                    if (!Accept(",")) { Expect("]"); break; }
                }
                return new ListExpr(items);
            }
            if (t.Is("{"))
            {
                var items = new List<(Expr, Expr)>();
                while (!Accept("}"))
                {
                    var key = ParseExpression();
                    Expect(":");
                    items.Add((key, ParseExpression()));
                    if (!Accept(",")) { Expect("}"); break; }
                }
                return new DictExpr(items);
            }
            throw parser.Error(segment, $"unexpected {t} in an expression");
        }

        private Expr ParsePostfix(Expr expr)
        {
            while (true)
            {
                if (Accept("."))
                {
                    var t = Next();
                    expr = t.Kind switch
                    {
                        TokenKind.Name => new AttributeExpr(expr, t.Text),
                        TokenKind.Integer => new ItemExpr(expr, new LiteralExpr(t.Value)),
                        _ => throw parser.Error(segment, $"expected an attribute name after `.`, found {t}"),
                    };
                }
                else if (Accept("["))
                {
                    expr = ParseSubscript(expr);
                }
                else if (Peek().Is("("))
                {
                    position++;
                    var (args, kwargs) = ParseArguments();
                    expr = new CallExpr(expr, args, kwargs);
                }
                else return expr;
            }
        }

        private Expr ParseSubscript(Expr target)
        {
            Expr? start = null, stop = null, step = null;
            if (!Peek().Is(":")) start = ParseExpression();
            if (!Accept(":"))
            {
                Expect("]");
                return new ItemExpr(target, start!);
            }
            if (!Peek().Is(":") && !Peek().Is("]")) stop = ParseExpression();
            if (Accept(":") && !Peek().Is("]")) step = ParseExpression();
            Expect("]");
            return new SliceExpr(target, start, stop, step);
        }

        /// <summary>Call arguments after <c>(</c>: positional, then <c>name=value</c>.</summary>
        private (List<Expr>, List<(string, Expr)>) ParseArguments()
        {
            var args = new List<Expr>();
            var kwargs = new List<(string, Expr)>();
            while (!Accept(")"))
            {
                if (Peek().Kind == TokenKind.Name && Peek(1).Is("=") && !Peek(1).Is("=="))
                {
                    string name = Next().Text;
                    position++;
                    kwargs.Add((name, ParseExpression()));
                }
                else args.Add(ParseExpression());
                if (!Accept(",")) { Expect(")"); break; }
            }
            return (args, kwargs);
        }

        private Expr ParseFiltersAndTests(Expr expr)
        {
            while (true)
            {
                if (Accept("|"))
                {
                    string name = ExpectName();
                    (List<Expr> args, List<(string, Expr)> kwargs) = Accept("(") ? ParseArguments() : ([], []);
                    expr = new FilterExpr(expr, name, args, kwargs);
                }
                else if (Accept("is"))
                {
                    bool negated = Accept("not");
                    string name = ExpectName();
                    var args = new List<Expr>();
                    if (Accept("(")) args = ParseArguments().Item1;
                    else if (StartsTestArgument(Peek())) args.Add(ParsePostfix(ParsePrimary()));
                    expr = new TestExpr(expr, name, args, negated);
                }
                else return expr;
            }
        }

        // `x is divisibleby 3`, `x is sameas false`: one argument without parentheses.
        private static bool StartsTestArgument(JinjaToken t) =>
            t.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float
            || (t.Kind == TokenKind.Name && t.Text is not ("and" or "or" or "if" or "else" or "not" or "in" or "is"))
            || t.Is("[") || t.Is("{");
    }
}
