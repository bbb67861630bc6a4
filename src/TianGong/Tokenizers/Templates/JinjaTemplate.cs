namespace TianGong.Tokenizers.Templates;

/// <summary>
/// A parsed Jinja template, rendered with the environment transformers uses for chat templates
/// (trim_blocks, lstrip_blocks, loop controls, raise_exception, strftime_now, a tojson that does not escape HTML).
/// </summary>
/// <remarks>
/// Hand-written because no maintained .NET library renders Jinja2 with Python's semantics: the NuGet candidates are
/// Liquid (Fluid.Core) and Scriban engines, whose syntax overlaps but whose whitespace control, filters (tojson, trim,
/// selectattr), Python string methods, namespaces and undefined handling differ from what chat templates rely on.
/// The structure follows @huggingface/jinja (lexer, parser, runtime); the covered subset is what published templates use.
/// </remarks>
public sealed class JinjaTemplate
{
    private readonly IReadOnlyList<Node> nodes;
    private readonly string where;

    private JinjaTemplate(IReadOnlyList<Node> nodes, string where) => (this.nodes, this.where) = (nodes, where);

    /// <summary>Parses <paramref name="source"/>; <paramref name="where"/> names it in errors.</summary>
    public static JinjaTemplate Parse(string source, string where) =>
        new(new JinjaParser(JinjaLexer.Segments(source, where), where).ParseTemplate(), where);

    /// <summary>Renders with the given variables (values as <see cref="JinjaValue.FromJson"/> makes them).</summary>
    public string Render(IReadOnlyDictionary<string, object?> variables) => new JinjaRuntime(where).Render(nodes, variables);
}
