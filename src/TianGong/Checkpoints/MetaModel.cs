using System.Reflection;
using TorchSharp.Modules;
using TorchSharp.Utils;

namespace TianGong.Checkpoints;

/// <summary>
/// Builds a model without drawing random weights that a checkpoint would overwrite, then fills it from the file.
/// </summary>
/// <remarks>
/// TorchSharp 0.107 has no <c>to_empty</c> or <c>skip_init</c>; <c>nn.Linear</c> always runs kaiming_uniform_ (3.4 s
/// for 500M values on 2 cores), and a meta tensor can neither be copied to the CPU nor <c>set_</c> to CPU storage.
/// What it has is <c>torch.set_default_device</c>: under the meta device every factory call without a device makes
/// a shape-only tensor, so the constructors of the family files run unchanged, in milliseconds and without memory.
/// Each parameter is then replaced by a CPU tensor read from the checkpoint, the way TorchSharp's own
/// <c>Module.to</c> replaces them (the public property where a module has one, else the field and its registration).
///
/// The default device is process-wide, not per thread: another thread creating a tensor without naming a device
/// during the build would get a meta tensor. So builds are serialised, kept short, and <see cref="ModelFolder"/>
/// takes this path only for models large enough to matter (small test models keep the ordinary path, so the
/// parallel test suite never sees the meta default).
/// </remarks>
internal static class MetaModel
{
    private static readonly Lock BuildGate = new();
    private static readonly Device Meta = new(DeviceType.META);

    /// <summary>
    /// The model built on the meta device, or null when its constructor also made tensors that are neither
    /// parameters nor buffers (tables derived from the config, such as rotary cos/sin): those would stay on the meta
    /// device with no checkpoint to fill them, so such a model must be built the ordinary way.
    /// </summary>
    public static nn.Module? TryBuild(Func<nn.Module> create)
    {
        nn.Module model;
        lock (BuildGate)
        {
            var previous = get_default_device();
            set_default_device(Meta);
            try
            {
                model = create();
            }
            finally
            {
                set_default_device(previous);
            }
        }
        if (HasUnregisteredMetaTensors(model))
        {
            model.Dispose();
            return null;
        }
        return model;
    }

    /// <summary>
    /// Replaces every parameter and buffer of a meta-built model by a <paramref name="dtype"/> CPU tensor filled
    /// from <paramref name="source"/>; <paramref name="sourceOf"/> maps the model's key to the checkpoint's.
    /// Floating tensors take <paramref name="dtype"/>; others (integer buffers) keep their own.
    /// </summary>
    public static void Materialize(nn.Module model, Func<string, (SafeTensorsFile File, string Key)> sourceOf, ScalarType dtype)
    {
        var slots = new List<Slot>();
        foreach (var (prefix, module) in Modules(model))
        {
            foreach (var (name, parameter) in module.named_parameters(recurse: false))
                slots.Add(new Slot(module, name, parameter, IsParameter: true, sourceOf(Join(prefix, name))));
            foreach (var (name, buffer) in module.named_buffers(recurse: false))
                slots.Add(new Slot(module, name, buffer, IsParameter: false, sourceOf(Join(prefix, name))));
        }
        // In file order, so that each reader thread walks the file forward.
        slots.Sort((a, b) => (a.Source.File.Path, a.Source.File.GetInfo(a.Source.Key).DataBegin)
            .CompareTo((b.Source.File.Path, b.Source.File.GetInfo(b.Source.Key).DataBegin)));
        var values = new Tensor?[slots.Count];
        try
        {
            // Reading is nearly all of a load, and most of a read is the kernel filling fresh pages: tensors are read
            // on several threads at once.
            Parallel.For(0, slots.Count, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
                i => values[i] = Read(slots[i].Source, slots[i].Meta, dtype));
        }
        catch (AggregateException e)
        {
            foreach (var value in values) value?.Dispose();
            if (e.InnerExceptions.OfType<TianGongException>().FirstOrDefault() is { } first)
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(first);
            throw;
        }
        using var _ = no_grad();
        for (int i = 0; i < slots.Count; i++)
        {
            var (module, name, meta, isParameter, _) = slots[i];
            Replace(module, name, isParameter ? new Parameter(values[i]!, meta.requires_grad) : values[i]!, isParameter);
            meta.Dispose();
        }
    }

    private sealed record Slot(nn.Module Module, string Name, Tensor Meta, bool IsParameter, (SafeTensorsFile File, string Key) Source);

    private static Tensor Read((SafeTensorsFile File, string Key) source, Tensor like, ScalarType dtype)
    {
        var target = empty(like.shape, like.is_floating_point() ? dtype : like.dtype);
        try
        {
            source.File.ReadInto(source.Key, target);
            return target;
        }
        catch
        {
            target.Dispose();
            throw;
        }
    }

    private static IEnumerable<(string Prefix, nn.Module Module)> Modules(nn.Module model) =>
        new[] { ("", model) }.Concat(model.named_modules());

    private static string Join(string prefix, string name) => prefix.Length == 0 ? name : $"{prefix}.{name}";

    private static readonly MethodInfo RegisterParameter = typeof(nn.Module).GetMethod("ConditionallyRegisterParameter",
        BindingFlags.Instance | BindingFlags.NonPublic, [typeof(string), typeof(Parameter)])!;
    private static readonly MethodInfo RegisterBuffer = typeof(nn.Module).GetMethod("ConditionallyRegisterBuffer",
        BindingFlags.Instance | BindingFlags.NonPublic, [typeof(string), typeof(Tensor), typeof(bool)])!;

    /// <summary>
    /// Points <paramref name="module"/>'s <paramref name="name"/> at <paramref name="value"/>: through its public
    /// property when it has one (TorchSharp's Linear and Embedding, whose setters also update native state), else by
    /// setting the field RegisterComponents registered and the registration itself.
    /// </summary>
    private static void Replace(nn.Module module, string name, Tensor value, bool isParameter)
    {
        var type = module.GetType();
        var property = type.GetProperty(name, BindingFlags.Instance | BindingFlags.Public);
        if (property is { CanWrite: true } && property.PropertyType.IsAssignableFrom(value.GetType()))
        {
            property.SetValue(module, value);
            return;
        }
        var field = FieldFor(type, name)
            ?? throw new InvalidOperationException($"{type.Name}.{name}: no property or field holds this {(isParameter ? "parameter" : "buffer")}");
        field.SetValue(module, value);
        if (isParameter) RegisterParameter.Invoke(module, [name, value]);
        else RegisterBuffer.Invoke(module, [name, value, true]);
    }

    private static FieldInfo? FieldFor(Type type, string name)
    {
        for (var t = type; t is not null && t != typeof(nn.Module); t = t.BaseType)
            foreach (var field in t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                if ((field.GetCustomAttribute<ComponentNameAttribute>()?.Name ?? field.Name) == name && typeof(Tensor).IsAssignableFrom(field.FieldType))
                    return field;
        return null;
    }

    /// <summary>
    /// True when a module holds, directly or in a helper object of its own assembly, a meta tensor that is not one
    /// of its registered parameters or buffers.
    /// </summary>
    private static bool HasUnregisteredMetaTensors(nn.Module model)
    {
        var registered = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var p in model.parameters()) registered.Add(p);
        foreach (var b in model.buffers()) registered.Add(b);
        var visited = new HashSet<object>(ReferenceEqualityComparer.Instance);
        return Modules(model).Any(m => HoldsStrayMeta(m.Module, registered, visited, depth: 0));
    }

    private static bool HoldsStrayMeta(object holder, HashSet<Tensor> registered, HashSet<object> visited, int depth)
    {
        if (depth > 4 || !visited.Add(holder)) return false;
        var torchSharp = typeof(nn.Module).Assembly;
        for (var t = holder.GetType(); t is not null && t.Assembly != torchSharp && t != typeof(object); t = t.BaseType)
        {
            foreach (var field in t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                switch (field.GetValue(holder))
                {
                    case Tensor tensor when !registered.Contains(tensor) && !tensor.IsInvalid && tensor.device_type == DeviceType.META:
                        return true;
                    case IEnumerable<Tensor> tensors when tensors.Any(x => x is not null && !registered.Contains(x) && !x.IsInvalid && x.device_type == DeviceType.META):
                        return true;
                    case nn.Module:
                        break; // walked as a module of its own
                    case { } other when other.GetType().Assembly == holder.GetType().Assembly && !other.GetType().IsValueType:
                        if (HoldsStrayMeta(other, registered, visited, depth + 1)) return true;
                        break;
                }
            }
        }
        return false;
    }
}
