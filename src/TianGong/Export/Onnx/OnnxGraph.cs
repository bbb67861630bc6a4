using System.Runtime.InteropServices;
using Google.Protobuf;
using TianGong.Export.Onnx.Proto;

namespace TianGong.Export.Onnx;

/// <summary>One attribute of a node: ONNX keeps the value in the field of its type and names that type.</summary>
public readonly record struct OnnxAttribute(AttributeProto Proto)
{
    public static OnnxAttribute Int(string name, long value) => new(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });

    public static OnnxAttribute Float(string name, float value) => new(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value });

    public static OnnxAttribute Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return new(a);
    }

    public static OnnxAttribute Tensor(string name, TensorProto value) => new(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Tensor, T = value });
}

/// <summary>
/// An ONNX graph under construction: nodes in topological order (each appended after its inputs), weights as
/// initializers, and typed inputs and outputs whose dimensions may be symbolic (<c>batch</c>, <c>sequence_length</c>).
/// Writes the model either as one file or, when its weights would not fit protobuf's 2 GB message limit, as
/// <c>model.onnx</c> plus <c>model.onnx.data</c> (ONNX's external-data layout: each tensor names the file, its offset
/// and its length; offsets aligned to 4096 bytes so runtimes can map them).
/// </summary>
public sealed class OnnxGraph
{
    public const int Opset = 17;
    public const string MicrosoftDomain = "com.microsoft";
    /// <summary>Above this many weight bytes the weights go to an external file (protobuf refuses messages of 2 GB).</summary>
    public const long DefaultExternalDataThreshold = 1L << 30;

    private readonly GraphProto graph;
    private readonly List<(TensorProto Proto, Func<byte[]> Data)> weights = [];
    private readonly HashSet<string> names = [];
    private bool usesMicrosoftDomain;
    private int counter;

    public OnnxGraph(string name) => graph = new GraphProto { Name = name };

    public void Input(string name, TensorProto.Types.DataType type, params object[] dims) => graph.Input.Add(ValueInfo(name, type, dims));

    public void Output(string name, TensorProto.Types.DataType type, params object[] dims) => graph.Output.Add(ValueInfo(name, type, dims));

    /// <summary>Appends a node and returns the name of its (first) output; <paramref name="output"/> names it (a graph output), else a fresh name.</summary>
    public string Op(string opType, string[] inputs, string? output = null, string domain = "", params OnnxAttribute[] attributes) =>
        OpMulti(opType, inputs, 1, output is null ? null : [output], domain, attributes)[0];

    public string Op(string opType, params string[] inputs) => OpMulti(opType, inputs, 1, null, "")[0];

    public string Op(string opType, string[] inputs, params OnnxAttribute[] attributes) => OpMulti(opType, inputs, 1, null, "", attributes)[0];

    public string[] OpMulti(string opType, string[] inputs, int outputs, string[]? outputNames = null, string domain = "", params OnnxAttribute[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = $"{opType}_{counter}", Domain = domain };
        node.Input.AddRange(inputs);
        var outs = outputNames ?? Enumerable.Range(0, outputs).Select(i => Fresh(opType)).ToArray();
        node.Output.AddRange(outs);
        foreach (var a in attributes) node.Attribute.Add(a.Proto);
        graph.Node.Add(node);
        usesMicrosoftDomain |= domain == MicrosoftDomain;
        counter++;
        return outs;
    }

    /// <summary>A float32 weight (shape, row-major values, produced when the model is written).</summary>
    public string Weight(string name, long[] shape, Func<float[]> values) =>
        Initializer(name, TensorProto.Types.DataType.Float, shape, () => MemoryMarshal.AsBytes(values().AsSpan()).ToArray());

    public string Initializer(string name, TensorProto.Types.DataType type, long[] shape, Func<byte[]> data)
    {
        if (!names.Add(name)) throw new InvalidOperationException($"ONNX graph: initializer '{name}' defined twice");
        var proto = new TensorProto { Name = name, DataType = (int)type };
        proto.Dims.AddRange(shape);
        weights.Add((proto, data));
        return name;
    }

    /// <summary>A small int64 constant (shapes, axes), kept inline however the weights are stored.</summary>
    public string Int64s(params long[] values)
    {
        var name = Fresh("const_i64");
        var proto = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        proto.Dims.Add(values.Length);
        proto.Int64Data.AddRange(values);
        graph.Initializer.Add(proto);
        return name;
    }

    /// <summary>A float scalar constant (shape []), inline.</summary>
    public string Scalar(float value)
    {
        var name = Fresh("const_f32");
        var proto = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        proto.FloatData.Add(value);
        graph.Initializer.Add(proto);
        return name;
    }

    private string Fresh(string prefix)
    {
        string name;
        do name = $"/{prefix}_{counter++}"; while (!names.Add(name));
        return name;
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d switch
            {
                string symbol => new TensorShapeProto.Types.Dimension { DimParam = symbol },
                int n => new TensorShapeProto.Types.Dimension { DimValue = n },
                long n => new TensorShapeProto.Types.Dimension { DimValue = n },
                _ => throw new ArgumentException($"dimension {d}"),
            });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
    }

    /// <summary>
    /// Writes <c>dir/fileName</c> (and <c>dir/fileName.data</c> when the weights exceed <paramref name="externalThreshold"/>
    /// bytes), each through a temporary name. Returns whether the weights went to the external file.
    /// </summary>
    public bool Save(string dir, string fileName, long externalThreshold = DefaultExternalDataThreshold)
    {
        long total = weights.Sum(w => w.Proto.Dims.Aggregate(1L, (a, b) => a * b) * ElementBytes((TensorProto.Types.DataType)w.Proto.DataType));
        bool external = total > externalThreshold;
        var model = new ModelProto { IrVersion = 8, ProducerName = "TianGong", ProducerVersion = "1", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        if (usesMicrosoftDomain) model.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
        var dataName = fileName + ".data";
        if (external)
        {
            AtomicFile.Write(Path.Combine(dir, dataName), stream =>
            {
                foreach (var (proto, data) in weights)
                {
                    long pad = (4096 - stream.Position % 4096) % 4096;
                    stream.Write(new byte[pad]);
                    var bytes = data();
                    proto.DataLocation = TensorProto.Types.DataLocation.External;
                    proto.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
                    proto.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = stream.Position.ToString() });
                    proto.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = bytes.Length.ToString() });
                    stream.Write(bytes);
                    graph.Initializer.Add(proto);
                }
            });
        }
        else
        {
            foreach (var (proto, data) in weights)
            {
                proto.RawData = ByteString.CopyFrom(data());
                graph.Initializer.Add(proto);
            }
            File.Delete(Path.Combine(dir, dataName)); // a stale external file from an earlier, larger export would mislead
        }
        AtomicFile.Write(Path.Combine(dir, fileName), stream => model.WriteTo(stream));
        return external;
    }

    private static long ElementBytes(TensorProto.Types.DataType type) => type switch
    {
        TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Int32 => 4,
        TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Double => 8,
        TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Bfloat16 => 2,
        _ => 1,
    };
}
