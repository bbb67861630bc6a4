namespace TianGong.Tokenizers.Templates;

/// <summary>A statement of a parsed template.</summary>
internal abstract record Node(int Line);

internal sealed record TextNode(string Text, int Line) : Node(Line);
internal sealed record OutputNode(Expr Value, int Line) : Node(Line);
internal sealed record IfNode(IReadOnlyList<(Expr Condition, IReadOnlyList<Node> Body)> Branches, IReadOnlyList<Node>? Else, int Line) : Node(Line);
internal sealed record ForNode(IReadOnlyList<string> Targets, Expr Iterable, Expr? Filter, IReadOnlyList<Node> Body, IReadOnlyList<Node>? Else, int Line) : Node(Line);
/// <summary><c>{% set name = value %}</c>, <c>{% set ns.attr = value %}</c> (Attribute set) or <c>{% set a, b = pair %}</c>.</summary>
internal sealed record SetNode(IReadOnlyList<string> Targets, string? Attribute, Expr Value, int Line) : Node(Line);
internal sealed record SetBlockNode(string Target, IReadOnlyList<Node> Body, int Line) : Node(Line);
internal sealed record MacroNode(string Name, IReadOnlyList<(string Name, Expr? Default)> Parameters, IReadOnlyList<Node> Body, int Line) : Node(Line);
internal sealed record BreakNode(int Line) : Node(Line);
internal sealed record ContinueNode(int Line) : Node(Line);
/// <summary>A block whose body is rendered as it is (transformers' <c>{% generation %}</c> marker).</summary>
internal sealed record BlockNode(IReadOnlyList<Node> Body, int Line) : Node(Line);

/// <summary>An expression.</summary>
internal abstract record Expr;

internal sealed record LiteralExpr(object? Value) : Expr;
internal sealed record NameExpr(string Name) : Expr;
internal sealed record ListExpr(IReadOnlyList<Expr> Items) : Expr;
internal sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Items) : Expr;
internal sealed record AttributeExpr(Expr Target, string Name) : Expr;
internal sealed record ItemExpr(Expr Target, Expr Key) : Expr;
internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step) : Expr;
internal sealed record CallExpr(Expr Function, IReadOnlyList<Expr> Args, IReadOnlyList<(string Name, Expr Value)> Kwargs) : Expr;
internal sealed record FilterExpr(Expr Value, string Name, IReadOnlyList<Expr> Args, IReadOnlyList<(string Name, Expr Value)> Kwargs) : Expr;
internal sealed record TestExpr(Expr Value, string Name, IReadOnlyList<Expr> Args, bool Negated) : Expr;
internal sealed record UnaryExpr(string Op, Expr Operand) : Expr;
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right) : Expr;
internal sealed record CompareExpr(Expr First, IReadOnlyList<(string Op, Expr Right)> Rest) : Expr;
internal sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Else) : Expr;
