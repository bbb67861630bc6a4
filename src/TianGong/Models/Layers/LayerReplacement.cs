using System.Reflection;
using System.Text.RegularExpressions;
using TorchSharp.Modules;

namespace TianGong.Models.Layers;

/// <summary>
/// Which linear layers a replacement targets, by their Hugging Face module names, with PEFT's meanings:
/// a plain name (<c>q_proj</c>) matches a module whose name is it or ends with <c>.q_proj</c>; a pattern with <c>*</c>
/// (<c>model.layers.*.self_attn.q_proj</c>) matches whole names, <c>*</c> standing for any run of characters;
/// <c>all-linear</c> matches every linear layer except the output head (lm_head), as PEFT's "all-linear" does.
/// </summary>
public sealed record LayerSelector(IReadOnlyList<string> Patterns)
{
    public const string AllLinear = "all-linear";

    /// <summary>PEFT's other form: one regular expression that must match a whole module name (re.fullmatch).</summary>
    public string? FullMatch { get; init; }

    public static LayerSelector Regex(string fullMatch) => new([]) { FullMatch = fullMatch };

    /// <summary>Exactly these module names.</summary>
    public static LayerSelector Exactly(IEnumerable<string> names) =>
        Regex(string.Join("|", names.Select(System.Text.RegularExpressions.Regex.Escape)));

    /// <summary>A comma-separated list (<c>q_proj,v_proj</c>) or <c>all-linear</c>.</summary>
    public static LayerSelector Parse(string patterns)
    {
        var list = patterns.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (list.Length == 0) throw new TianGongException("target modules: give at least one module name or pattern");
        return new LayerSelector(list);
    }

    public bool Matches(string moduleName)
    {
        if (FullMatch is { } regex && System.Text.RegularExpressions.Regex.IsMatch(moduleName, $"^(?:{regex})$", RegexOptions.None, TimeSpan.FromSeconds(1)))
            return true;
        foreach (var pattern in Patterns)
        {
            if (pattern == AllLinear)
            {
                if (!IsOutputHead(moduleName)) return true;
            }
            else if (pattern.Contains('*'))
            {
                var glob = "^" + string.Join(".*", pattern.Split('*').Select(System.Text.RegularExpressions.Regex.Escape)) + "$";
                if (System.Text.RegularExpressions.Regex.IsMatch(moduleName, glob)) return true;
            }
            else if (moduleName == pattern || moduleName.EndsWith("." + pattern, StringComparison.Ordinal)) return true;
        }
        return false;
    }

    // PEFT leaves the output layer out of all-linear: adapting the vocabulary projection is rarely wanted.
    private static bool IsOutputHead(string name) => name == "lm_head" || name.EndsWith(".lm_head", StringComparison.Ordinal);

    public override string ToString() => FullMatch ?? string.Join(",", Patterns);
}

/// <summary>
/// Replaces linear layers of any model by name, as PEFT's injection, transformers' quantizers and tensor-parallel plans
/// do: walk the named modules, match names, build the replacement from the original, and put it in the parent's place
/// (the registered child and the field the parent's forward calls). Family files never change for it.
/// </summary>
public static class LayerReplacement
{
    /// <summary>
    /// Replaces every linear layer whose name <paramref name="selector"/> matches with <c>replace(name, parts)</c>
    /// and returns the replaced names in model order. A selector that matches nothing is an error that lists the
    /// model's linear layers.
    /// </summary>
    public static IReadOnlyList<string> Replace(nn.Module model, LayerSelector selector, Func<string, LinearParts, nn.Module<Tensor, Tensor>> replace)
    {
        var linear = LinearLayerNames(model);
        var targets = linear.Where(selector.Matches).ToList();
        if (targets.Count == 0)
            throw new TianGongException($"target modules '{selector}' match no linear layer of this model; its linear layers are: {Summarize(linear)}");
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module);
        foreach (var name in targets)
        {
            var parts = LinearLayers.Describe(modules[name])!;
            int dot = name.LastIndexOf('.');
            var parent = dot < 0 ? model : modules[name[..dot]];
            SetChild(parent, name[(dot + 1)..], modules[name], replace(name, parts));
        }
        return targets;
    }

    /// <summary>
    /// The names of every linear-like module (Linear, Conv1D, wrappers), in model order; the insides of a wrapper
    /// (a LoRA layer's lora_A and lora_B) belong to it and are not listed.
    /// </summary>
    public static IReadOnlyList<string> LinearLayerNames(nn.Module model)
    {
        var names = new List<string>();
        string? wrapper = null;
        foreach (var (name, module) in model.named_modules())
        {
            if (name.Length == 0 || (wrapper is not null && name.StartsWith(wrapper + ".", StringComparison.Ordinal))) continue;
            if (LinearLayers.Describe(module) is null) continue;
            names.Add(name);
            wrapper = module is ILinearLayer ? name : null;
        }
        return names;
    }

    /// <summary>
    /// Puts <paramref name="replacement"/> where <paramref name="old"/> was: in a ModuleList slot, or in the parent's
    /// field of that name (fields are named after their checkpoint keys, style.md). Children are re-registered in their
    /// original order so that state-dict order, and with it the saved file, does not change.
    /// </summary>
    private static void SetChild(nn.Module parent, string childName, nn.Module old, nn.Module replacement)
    {
        // The replacement takes the mode of the layer it replaces: in eval mode a projection's few rows go through the
        // decode kernel, so a wrapper left in training mode in an eval model would compute other bits than the original.
        replacement.train(old.training);
        if (parent is ModuleList<nn.Module<Tensor, Tensor>> list && int.TryParse(childName, out int index))
            list[index] = (nn.Module<Tensor, Tensor>)replacement;
        else
        {
            var field = FieldsOf(parent.GetType()).FirstOrDefault(f => f.Name == childName && ReferenceEquals(f.GetValue(parent), old))
                ?? throw new TianGongException($"{parent.GetType().Name}.{childName}: no field holds this layer, so it cannot be replaced");
            if (!field.FieldType.IsInstanceOfType(replacement))
                throw new TianGongException($"{parent.GetType().Name}.{childName}: the field's type {field.FieldType.Name} cannot hold a {replacement.GetType().Name}; build the layer with Models.Layers.Projections");
            field.SetValue(parent, replacement);
        }
        var children = parent.named_children().ToList();
        int at = children.FindIndex(c => c.name == childName);
        foreach (var (name, _) in children.Skip(at)) parent.register_module(name, null!);
        foreach (var (name, child) in children.Skip(at)) parent.register_module(name, name == childName ? replacement : child);
    }

    private static IEnumerable<FieldInfo> FieldsOf(Type? type)
    {
        for (; type is not null && type != typeof(nn.Module); type = type.BaseType)
            foreach (var f in type.GetFields(BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public | BindingFlags.DeclaredOnly))
                yield return f;
    }

    private static string Summarize(IReadOnlyList<string> names) =>
        names.Count <= 40 ? string.Join(", ", names) : string.Join(", ", names.Take(40)) + $" (+{names.Count - 40} more)";
}
