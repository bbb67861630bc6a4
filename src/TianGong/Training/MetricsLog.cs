using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace TianGong.Training;

/// <summary>
/// Appends one JSON object per line to <c>metrics.jsonl</c>, flushed per line so a crash loses at most the line being
/// written and other tools can <c>tail -f</c> it. A resumed run first drops lines past its checkpoint step, so the
/// log has each step once even when the crashed run got further than its last checkpoint.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    public const string FileName = "metrics.jsonl";

    private static readonly JsonSerializerOptions Json = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        // A diverged run logs NaN or Infinity loss; that must be recorded, not crash the logger.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        RespectRequiredConstructorParameters = true, // a line without step or train_loss is damage, not step 0
    };

    private readonly StreamWriter writer;

    public string Path { get; }

    private MetricsLog(string path, FileMode mode)
    {
        Path = path;
        var stream = new FileStream(path, mode, FileAccess.Write, FileShare.Read);
        writer = new StreamWriter(stream, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false)) { NewLine = "\n" };
    }

    /// <summary>Starts a fresh log, replacing any existing file.</summary>
    public static MetricsLog Create(string path) => new(path, FileMode.Create);

    /// <summary>
    /// Continues a log for a run resumed from the checkpoint at <paramref name="step"/>: keeps lines with
    /// step &lt;= <paramref name="step"/> (and drops a torn last line), then appends.
    /// </summary>
    public static MetricsLog Resume(string path, long step)
    {
        if (File.Exists(path))
        {
            var kept = Read(path).Where(r => r.Step <= step).ToList();
            AtomicFile.Write(path, stream =>
            {
                using var rewrite = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true) { NewLine = "\n" };
                foreach (var record in kept) rewrite.WriteLine(JsonSerializer.Serialize(record, Json));
            });
        }
        return new MetricsLog(path, FileMode.Append);
    }

    public void Append(MetricsRecord record)
    {
        writer.WriteLine(JsonSerializer.Serialize(record, Json));
        writer.Flush();
    }

    /// <summary>
    /// Reads every record. An unparsable final line without its newline is a write torn by a crash and is skipped;
    /// an unparsable line anywhere else means the file is damaged and throws.
    /// </summary>
    public static List<MetricsRecord> Read(string path)
    {
        var text = File.ReadAllText(path);
        var lines = text.Split('\n');
        var records = new List<MetricsRecord>();
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].Length == 0) continue;
            bool isTornTail = i == lines.Length - 1; // no newline after it
            try
            {
                records.Add(JsonSerializer.Deserialize<MetricsRecord>(lines[i], Json)
                            ?? throw new JsonException("line is null"));
            }
            catch (JsonException e) when (!isTornTail)
            {
                throw new TianGongException($"{path}: line {i + 1} is not a metrics record ({e.Message})");
            }
            catch (JsonException)
            {
                // torn tail: dropped
            }
        }
        return records;
    }

    public void Dispose() => writer.Dispose();
}
