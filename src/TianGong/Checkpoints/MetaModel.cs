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
/// Each parameter is then replaced by a CPU tensor from the checkpoint, the way TorchSharp's own <c>Module.to</c>
/// replaces them (the public property where a module has one, else the field and its registration): a view of the
/// memory-mapped file when the file already holds it in the wanted dtype, else a converted copy.
/// (nn.Embedding would be an exception: TorchSharp's native constructor draws its table on the CPU and only then
/// moves the module to the default device, about 0.3 s and 257 MB for GPT-2's 50257×1280 table, held until the GC
/// runs. The families therefore use <see cref="Models.Layers.EmbeddingTable"/>.)
///
/// The default device is process-wide, not per thread: another thread creating a tensor without naming a device
/// during the build would get a meta tensor. So builds are serialised, kept short, and ModelFolder
/// takes this path only for models large enough to matter (small test models keep the ordinary path, so the
/// parallel test suite never sees the meta default).
/// </remarks>
internal static class MetaModel
{
    private static readonly Lock BuildGate = new();
    private static readonly Device Meta = new(DeviceType.META);

    /// <summary>
    /// The model built on the meta device, or null when its constructor cannot run there (libtorch refuses to mix
    /// meta and CPU tensors) or made tensors that are neither parameters nor buffers (tables derived from the config,
    /// such as rotary cos/sin): those would stay on the meta device with no checkpoint to fill them. A null means
    /// the model must be built the ordinary way.
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
            catch (Exception e) when (e is not TianGongException)
            {
                // A constructor that computes with tensors (mixing a meta tensor with a CPU one, reading a value) cannot
                // run on meta: the caller builds it the ordinary way, where the same code runs as it always has (and
                // any real error shows again).
                return null;
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
    /// Replaces every parameter and buffer of a meta-built model by a <paramref name="dtype"/> CPU tensor from the
    /// checkpoint (mapped, or read and converted); <paramref name="sourceOf"/> maps the model's key to the checkpoint's.
    /// Floating tensors take <paramref name="dtype"/>; others (integer buffers) keep their own.
    /// </summary>
    /// <param name="streamed">Keys left as views of the mapping with no page resident, in the file's dtype (streamed layers).</param>
    public static void Materialize(nn.Module model, Func<string, (SafeTensorsFile File, string Key)> sourceOf, ScalarType dtype, Func<string, bool>? streamed = null)
    {
        var slots = new List<Slot>();
        foreach (var (prefix, module) in Modules(model))
        {
            foreach (var (name, parameter) in module.named_parameters(recurse: false))
                slots.Add(new Slot(module, name, parameter, IsParameter: true, sourceOf(Join(prefix, name)), streamed?.Invoke(Join(prefix, name)) == true));
            foreach (var (name, buffer) in module.named_buffers(recurse: false))
                slots.Add(new Slot(module, name, buffer, IsParameter: false, sourceOf(Join(prefix, name))));
        }
        using var _ = no_grad();
        foreach (var (module, name, meta, isParameter, source, lazy) in slots)
        {
            var values = lazy
                ? source.File.Map(source.Key, populate: false) ?? throw new TianGongException($"{source.File.Path}: tensor '{source.Key}' is not aligned to its element size, so it cannot be streamed")
                : Values(source, meta, dtype);
            Replace(module, name, isParameter ? new Parameter(values, meta.requires_grad) : values, isParameter);
            meta.Dispose();
        }
    }

    /// <summary>
    /// The checkpoint's tensor for <paramref name="meta"/>: a view of the mapped file when the file holds it in the
    /// wanted dtype; else converted out of the mapping, whose pages are released right after the copy (so a
    /// conversion holds one tensor's source pages at a time); else, for a tensor not aligned to its element size,
    /// read with positioned reads and converted.
    /// </summary>
    private static Tensor Values((SafeTensorsFile File, string Key) source, Tensor meta, ScalarType dtype)
    {
        var wanted = meta.is_floating_point() ? dtype : meta.dtype;
        var mapped = source.File.Map(source.Key);
        if (mapped is null) return Read(source, meta.shape, wanted);
        if (mapped.dtype == wanted) return mapped;
        using (mapped)
        {
            var converted = empty(meta.shape, wanted, device: CPU);
            converted.copy_(mapped);
            SafeTensorsFile.Release(mapped);
            return converted;
        }
    }

    private sealed record Slot(nn.Module Module, string Name, Tensor Meta, bool IsParameter, (SafeTensorsFile File, string Key) Source, bool Lazy = false);

    private static Tensor Read((SafeTensorsFile File, string Key) source, long[] shape, ScalarType dtype)
    {
        var target = empty(shape, dtype, device: CPU);
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
