using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Tokenizers;

namespace TianGong.Inference.Serving;

/// <summary>
/// Continuous (iteration-level) batching: one scheduler thread owns the model and a per-row KV cache of
/// MaxBatch slots. Between decode steps it admits waiting requests (their prompts prefilled together, at most
/// <see cref="ServingOptions.PrefillChunk"/> tokens per step, so a long prompt is prefilled in chunks) and drops finished or
/// cancelled ones, whose slot the last live row moves into, so live rows stay contiguous and one forward pass
/// decodes all of them. Each token is chosen by the request's own <see cref="DecodingSequence"/> (the decoding core the CLI
/// generators share, with its own generator), so its output does not depend on its neighbours, and a request whose
/// sampling fails (a constraint with nothing left, NaN logits) fails alone. What a step produced for all its streams leaves
/// the scheduler thread as one pool work item (<see cref="Deliver"/>), so that the thread the forward pass runs on pays one
/// hand-off per step rather than a thread wake per stream.
/// </summary>
public sealed class ServingEngine : IDisposable
{
    private readonly CausalLM model;
    private readonly ITextTokenizer tokenizer;
    private readonly ServingOptions options;
    private readonly KvCache cache;
    private readonly Tuning.MultiLoraAdapters? adapters; // which LoRA adapter each row of a forward pass uses (serve --adapter NAME=DIR)
    private readonly object gate = new();
    private readonly Queue<Sequence> pending = new();
    private readonly Queue<Action> work = new();     // other model work (embeddings), run between steps
    private readonly List<Sequence> active = [];      // active[row] owns cache row `row`
    private int decoding;                             // rows 0..decoding−1 decode; the rest are still prefilling their prompts
    private readonly Thread scheduler;
    private bool stopping;
    private long forwardTicks, sampleTicks, emitTicks;  // this iteration's phases (Stopwatch ticks), published to Metrics.Phases
    private List<Action> outbox = [];                  // this phase's writes to the sequences' channels, in order (scheduler thread only)
    private readonly ConcurrentQueue<List<Action>> deliveries = new();
    private int delivering;                            // 1 while a pool work item is writing deliveries (one at a time, so in order)

    /// <param name="defaults">The folder's generation_config.json, or null for OpenAI's defaults (temperature 1, top_p 1).</param>
    /// <param name="adapters">LoRA adapters loaded into <paramref name="model"/> that requests may name (CompletionRequest.Adapter).</param>
    public ServingEngine(CausalLM model, ITextTokenizer tokenizer, ServingOptions options, GenerationConfig? defaults = null,
        Tuning.MultiLoraAdapters? adapters = null)
    {
        this.adapters = adapters;
        options.Validate();
        this.model = model;
        this.tokenizer = tokenizer;
        this.options = options;
        Defaults = defaults?.ToSamplingOptions() ?? new SamplingOptions();
        MaxContext = options.MaxContext == 0 ? model.Config.ContextLength : Math.Min(options.MaxContext, model.Config.ContextLength);
        maxTokenBytes = Math.Max(1, Enumerable.Range(0, tokenizer.VocabSize).Max(id => tokenizer.TokenBytes(id).Length));
        model.eval();
        // Batched steps read aligned matrices in place (a mapped checkpoint's are not); streamed layers (--max-memory)
        // keep their weights in the file, which is the point of streaming them.
        if (!Offload.OffloadedModel.Streams(model)) DecodeMatmul.AlignWeights(model);
        cache = model.CreateCache(options.MaxBatch, MaxContext);
        cache.UsePerRowLengths();
        scheduler = new Thread(Run) { IsBackground = true, Name = "tiangong-scheduler" };
        scheduler.Start();
    }

    /// <summary>Most positions (prompt + generated) one sequence may hold.</summary>
    public int MaxContext { get; }

    /// <summary>Most sequences waiting for a slot; one request's sequences (n × prompts) must fit in it together.</summary>
    public int MaxQueue => options.MaxQueue;

    public EngineMetrics Metrics { get; } = new();

    /// <summary>Sampling defaults for request fields left out: the folder's generation_config.json, resolved.</summary>
    public SamplingOptions Defaults { get; }

    public ITextTokenizer Tokenizer => tokenizer;

    /// <summary>
    /// Queues a request; its chunks arrive on the returned reader, the last one with a finish reason.
    /// Cancelling <paramref name="cancel"/> ends the sequence at the next step and frees its slot.
    /// </summary>
    /// <exception cref="TianGongException">The request does not fit the context or names a token outside the vocabulary.</exception>
    /// <exception cref="EngineBusyException">The queue is full or the engine is stopping.</exception>
    /// <param name="readersRunInline">The readers' continuations may run synchronously on the thread that writes their
    /// chunks: one pool work item then writes every stream's chunks of a step, and a reader that writes to a socket (the
    /// server) does it there instead of waking a pool thread per stream and token. Only for readers that never block.</param>
    public ChannelReader<CompletionChunk> Submit(CompletionRequest request, CancellationToken cancel = default, bool readersRunInline = false) =>
        SubmitAll([request], cancel, readersRunInline)[0];

    /// <summary>
    /// Queues several sequences (one request's n choices of several prompts) whole or not at all: every one is validated
    /// first, and they enter the queue together only if all of them fit, so a request answered 429 has started nothing
    /// and leaves no queued work behind to turn the next request away.
    /// </summary>
    /// <exception cref="TianGongException">A sequence is invalid, or there are more than the queue could ever hold.</exception>
    /// <exception cref="EngineBusyException">The queue has no room for all of them now, or the engine is stopping.</exception>
    public IReadOnlyList<ChannelReader<CompletionChunk>> SubmitAll(IReadOnlyList<CompletionRequest> requests, CancellationToken cancel = default,
        bool readersRunInline = false)
    {
        if (requests.Count == 0) throw new TianGongException("n: no sequences to generate");
        if (requests.Count > options.MaxQueue)
            throw new TianGongException($"n: {requests.Count} sequences (n × prompts) exceed the server's queue of {options.MaxQueue}");
        foreach (var r in requests) Validate(r);
        var sequences = new List<Sequence>(requests.Count);
        try
        {
            foreach (var r in requests) sequences.Add(new Sequence(this, r, Decoding(r), cancel, readersRunInline));
            lock (gate)
            {
                if (stopping || pending.Count + sequences.Count > options.MaxQueue)
                    throw new EngineBusyException(stopping ? "the server is shutting down"
                        : $"the queue has no room for {sequences.Count} more sequences ({pending.Count} of {options.MaxQueue} waiting)");
                foreach (var sequence in sequences)
                {
                    pending.Enqueue(sequence);
                    Metrics.Accepted(sequence.Request.PromptIds.Length);
                }
                Metrics.Load(pending.Count, active.Count);
                Monitor.Pulse(gate);
            }
        }
        catch
        {
            foreach (var sequence in sequences) sequence.Decoding.Dispose();
            throw;
        }
        return [.. sequences.Select(s => s.Output.Reader)];
    }

    /// <summary>
    /// Most characters a text can have and still fit <see cref="MaxContext"/> tokens, so a request's size is checked
    /// before it is tokenized. Every token stands for at most <see cref="maxTokenBytes"/> UTF-8 bytes and every UTF-16
    /// char is at least one byte; the factor 4 leaves room for normalizers that drop characters.
    /// </summary>
    public long MaxPromptChars => 4L * MaxContext * maxTokenBytes;

    private readonly int maxTokenBytes;

    /// <summary>Mean of the last hidden states over each input's tokens, computed on the scheduler thread between decode steps.</summary>
    public Task<float[][]> EmbedAsync(IReadOnlyList<int[]> inputs, CancellationToken cancel = default)
    {
        foreach (var ids in inputs) ValidateIds(ids, "input");
        var done = new TaskCompletionSource<float[][]>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (gate)
        {
            if (stopping) throw new EngineBusyException("the server is shutting down");
            work.Enqueue(() =>
            {
                if (cancel.IsCancellationRequested) { done.TrySetCanceled(cancel); return; }
                try
                {
                    done.TrySetResult(inputs.Select(ids =>
                    {
                        using var scope = NewDisposeScope();
                        using var input = tensor(ids.Select(i => (long)i).ToArray(), device: model.ModelDevice).unsqueeze(0); // (1, T)
                        return model.Hidden(input)[0].mean([0]).to(ScalarType.Float32).data<float>().ToArray();
                    }).ToArray());
                }
                catch (Exception e) { done.TrySetException(e); }
            });
            Monitor.Pulse(gate);
        }
        return done.Task;
    }

    private void Validate(CompletionRequest r)
    {
        ValidateIds(r.PromptIds, "prompt");
        if (r.MaxTokens < 1) throw new TianGongException("max_tokens: must be at least 1");
        if (r.PromptIds.Length + r.MaxTokens > MaxContext)
            throw new TianGongException($"max_tokens: the prompt's {r.PromptIds.Length} tokens plus {r.MaxTokens} new tokens exceed the context of {MaxContext}");
        ConfigChecks.InRange("temperature", r.Temperature, 0, 2);
        ConfigChecks.InRange("top_p", r.TopP, 0, 1, minInclusive: false);
        ConfigChecks.InRange("presence_penalty", r.PresencePenalty, -2, 2);
        ConfigChecks.InRange("frequency_penalty", r.FrequencyPenalty, -2, 2);
        if (r.TopLogprobs is { } k) ConfigChecks.InRange("top_logprobs", k, 0, 20);
        if (r.StopTokenIds is { } stops) DecodingSequence.CheckIds(stops, model.Config.VocabSize, "stop_token_ids");
        if (r.Adapter is { } adapter && adapters?.Contains(adapter) != true) throw new TianGongException($"model: no adapter named '{adapter}'");
    }

    private void ValidateIds(int[] ids, string what)
    {
        if (ids.Length == 0) throw new TianGongException($"{what}: empty");
        if (ids.Length > MaxContext) throw new TianGongException($"{what}: {ids.Length} tokens exceed the context of {MaxContext}");
        DecodingSequence.CheckIds(ids, model.Config.VocabSize, what);
    }

    /// <summary>The request in the decoding core's terms: its end-of-sequence ids are the folder's (or the tokenizer's) plus its stop tokens.</summary>
    private DecodingSequence Decoding(CompletionRequest r)
    {
        IEnumerable<int> eos = r.IgnoreEos ? [] : Defaults.EosTokenIds ?? [tokenizer.EosId];
        var sampling = new SamplingOptions(r.MaxTokens, r.Temperature, r.TopK, r.TopP, r.RepetitionPenalty, r.Stop, r.Seed,
            MinNewTokens: Math.Min(r.MinTokens, r.MaxTokens), PresencePenalty: r.PresencePenalty, FrequencyPenalty: r.FrequencyPenalty,
            EosTokenIds: [.. eos.Concat(r.StopTokenIds ?? []).Distinct()]);
        sampling.Validate();
        return new DecodingSequence(sampling, model.Config.VocabSize, [], tokenizer, r.PromptIds, r.Constraint);
    }

    private void Run()
    {
        using var _ = no_grad();
        while (true)
        {
            var admitted = new List<Sequence>();
            var jobs = new List<Action>();
            lock (gate)
            {
                while (pending.Count == 0 && active.Count == 0 && work.Count == 0 && !stopping) Monitor.Wait(gate);
                if (stopping && pending.Count == 0 && active.Count == 0 && work.Count == 0) return;
                while (work.Count > 0) jobs.Add(work.Dequeue());
                while (active.Count + admitted.Count < options.MaxBatch && pending.Count > 0) admitted.Add(pending.Dequeue());
                Metrics.Load(pending.Count, active.Count + admitted.Count);
            }
            foreach (var job in jobs) job();
            var watch = Stopwatch.StartNew();
            forwardTicks = sampleTicks = emitTicks = 0;
            Admit(admitted);
            PrefillChunk();
            Deliver();                                  // first tokens go out before the decode step, as they were chosen
            long prefillTicks = watch.ElapsedTicks - sampleTicks - emitTicks;
            int steps = decoding > 0 ? 1 : 0;
            try
            {
                if (decoding > 0) Decode();
            }
            catch (Exception e)
            {
                // A failed batched forward pass fails every sequence it decoded rather than the scheduler itself.
                for (int row = decoding - 1; row >= 0; row--)
                {
                    active[row].Fail(e);
                    Release(row);
                }
            }
            long delivered = Stopwatch.GetTimestamp();
            Deliver();
            emitTicks += Stopwatch.GetTimestamp() - delivered;
            Metrics.Busy(watch.Elapsed.TotalSeconds);
            double f = Stopwatch.Frequency;
            Metrics.AddPhases(prefillTicks / f, forwardTicks / f, sampleTicks / f, emitTicks / f, steps);
            lock (gate) Metrics.Load(pending.Count, active.Count);
        }
    }

    /// <summary>Gives newly admitted sequences the next free rows, after the decoding ones, with nothing of their prompts cached yet.</summary>
    private void Admit(List<Sequence> admitted)
    {
        foreach (var s in admitted)
        {
            if (s.Cancel.IsCancellationRequested) { s.Finish(); continue; }
            cache.ClearRow(active.Count);
            active.Add(s);
        }
    }

    /// <summary>
    /// Prefills the next <see cref="ServingOptions.PrefillChunk"/> prompt tokens of the prefilling rows, in row order, in one
    /// forward pass right-padded to the longest piece (the cache counts each row's real tokens only), and samples the first
    /// token of each prompt that is now complete. Rows take their pieces in order, so the completed prompts are the first rows
    /// after the decoding ones and join them by moving the boundary. A prompt longer than the chunk takes several iterations,
    /// each followed by a decode step of the running rows (vLLM's chunked prefill). If the batched pass fails, each piece runs
    /// alone, so a prompt whose forward pass fails fails by itself and the others go on.
    /// </summary>
    private void PrefillChunk()
    {
        for (int row = active.Count - 1; row >= decoding; row--)
            if (active[row].Cancel.IsCancellationRequested)
            {
                active[row].Finish();
                Release(row);
            }
        if (active.Count == decoding) return;
        var pieces = new List<int>();
        for (int row = decoding, budget = options.PrefillChunk; row < active.Count && budget > 0; row++)
        {
            var s = active[row];
            int piece = Math.Min(s.Request.PromptIds.Length - s.Prefilled, budget);
            pieces.Add(piece);
            budget -= piece;
        }
        int first = decoding;
        try { PrefillRows(first, [.. pieces]); }
        catch (Exception) when (pieces.Count > 1)
        {
            for (int i = 0; i < pieces.Count; i++)
            {
                var s = active[first + i];
                try
                {
                    // A pass that failed after the cache counted the piece cannot be replayed: that row fails.
                    if (cache.RowLength(first + i) != s.Prefilled) throw new InvalidOperationException("prefill failed after its cache was written");
                    PrefillRows(first + i, [pieces[i]]);
                }
                catch (Exception e) { s.Fail(e); } // this prompt's forward pass failed: this sequence only
            }
        }
        catch (Exception e) { active[first].Fail(e); }
        for (int row = active.Count - 1; row >= first; row--)
            if (active[row].IsDone) Release(row);
        // Completed prompts join the decoding rows. They are the first prefilling rows unless a release above moved a row
        // among them; then one is swapped to the boundary through a free row (a release freed one).
        for (int row = decoding; row < active.Count; row++)
        {
            if (active[row].Prefilled != active[row].Request.PromptIds.Length) continue;
            if (row != decoding)
            {
                int free = active.Count;
                cache.MoveRow(decoding, free);
                cache.MoveRow(row, decoding);
                cache.MoveRow(free, row);
                (active[row], active[decoding]) = (active[decoding], active[row]);
            }
            decoding++;
        }
    }

    /// <summary>One forward pass over the next pieces of the prompts of rows first..first+count−1, then the first token of each prompt it completes.</summary>
    private void PrefillRows(int first, int[] pieces)
    {
        int count = pieces.Length;
        int t = pieces.Max();
        var ids = new long[count * t];                    // right padding: token 0, never attended by real tokens
        for (int i = 0; i < count; i++)
        {
            var s = active[first + i];
            for (int j = 0; j < pieces[i]; j++) ids[i * t + j] = s.Request.PromptIds[s.Prefilled + j];
        }
        cache.SelectRows(first, count);
        cache.SetRealTokens(pieces);
        using var scope = NewDisposeScope();
        using var input = tensor(ids, [count, t], device: model.ModelDevice);                      // (B, T)
        using var route = adapters?.Route([.. active.GetRange(first, count).Select(s => s.Request.Adapter)]); // held through FirstTokens' LM head
        var hidden = model.Hidden(new Models.DecoderInput { InputIds = input, Cache = cache });     // (B, T, C)
        for (int i = 0; i < count; i++) active[first + i].Prefilled += pieces[i];
        var done = Enumerable.Range(0, count).Where(i => active[first + i].Prefilled == active[first + i].Request.PromptIds.Length).ToArray();
        try { FirstTokens(first, pieces, hidden, done); }
        catch (Exception e)
        {
            foreach (int i in done) active[first + i].Fail(e); // the pass itself succeeded: only the rows that wanted logits fail
        }
    }

    private void FirstTokens(int first, int[] pieces, Tensor hidden, int[] done)
    {
        // Only the last position of each completed prompt needs logits: the LM head runs on those rows, not B × T.
        if (done.Length == 0) return;
        var last = tensor(done.Select(i => (long)pieces[i] - 1).ToArray(), device: hidden.device).view(done.Length, 1, 1).expand(done.Length, 1, hidden.shape[2]);
        var rows = hidden.index_select(0, tensor(done.Select(i => (long)i).ToArray(), device: hidden.device)); // (D, T, C)
        var logits = model.LmHead(rows.gather(1, last)).select(1, 0).to(ScalarType.Float32);       // (D, V)
        for (int k = 0; k < done.Length; k++) Metrics.FirstToken(active[first + done[k]].SinceSubmitted.Elapsed.TotalSeconds);
        StepRows([.. done.Select(i => first + i)], logits);
    }

    /// <summary>One token for every live row; rows prefilled in this iteration feed the first token they sampled.</summary>
    private void Decode()
    {
        int n = decoding;
        cache.SelectRows(0, n);
        using var scope = NewDisposeScope();
        using var input = tensor(active.Take(n).Select(s => (long)s.LastToken).ToArray(), device: model.ModelDevice).unsqueeze(1); // (B, 1)
        using var route = adapters?.Route([.. active.Take(n).Select(s => s.Request.Adapter)]);     // rows follow active[]
        long start = Stopwatch.GetTimestamp();
        var logits = model.forward(input, cache).select(1, 0);                                     // (B, V); the decoding core reads fp32
        forwardTicks += Stopwatch.GetTimestamp() - start;
        var rows = new int[n];
        for (int row = 0; row < n; row++)
        {
            var s = active[row];
            if (s.Cancel.IsCancellationRequested) { s.Finish(); rows[row] = -1; }
            else rows[row] = row;
        }
        StepRows(rows, logits);
        for (int row = n - 1; row >= 0; row--)
            if (active[row].IsDone) Release(row);
    }

    /// <summary>
    /// Chooses the next token of the given rows (−1: skip) from their logits (one row of <paramref name="logits"/> each, in
    /// order), all in one call of the decoding core so that plain sampling runs batched, then streams what became final.
    /// A failure ends its row only.
    /// </summary>
    private void StepRows(int[] rows, Tensor logits)
    {
        long start = Stopwatch.GetTimestamp();
        var sequences = rows.Select(row => row < 0 ? null : active[row].Decoding).ToArray();
        // No log-softmax over the vocabulary for a request that asked for no log-probabilities (most of them).
        var tops = rows.Select(row => row < 0 ? -1 : active[row].Request.TopLogprobs ?? -1).ToArray();
        var results = DecodingSequence.StepRows(sequences, logits, tops.Any(t => t >= 0) ? tops : null);
        long sampled = Stopwatch.GetTimestamp();
        sampleTicks += sampled - start;
        for (int i = 0; i < rows.Length; i++)
        {
            if (rows[i] < 0) continue;
            var s = active[rows[i]];
            // Whatever went wrong choosing this row's token (libtorch errors included) ends this row only.
            if (results[i].Error is { } e) s.Fail(e);
            else Emit(s, results[i].Step!);
        }
        emitTicks += Stopwatch.GetTimestamp() - sampled;
    }

    private void Emit(Sequence s, DecodeStep step)
    {
        var r = s.Request;
        if (!step.Appended)
        {
            s.Emit(null, step.FinishReason);
            return;
        }
        s.LastToken = step.Token;
        Metrics.Generated(1);
        IReadOnlyList<TopLogprob>? top = r.TopLogprobs is null ? null : [.. step.Top!.Select(t => new TopLogprob(t.TokenId, t.Logprob))];
        s.Emit(new GeneratedToken(step.Token, step.Logprob ?? float.NaN, top), step.FinishReason);
    }

    /// <summary>
    /// Hands this phase's chunks and completions to the pool in one work item instead of writing each stream's channel
    /// here: a write that wakes a reader costs the scheduler a thread wake per stream, between forward passes. One item at
    /// a time writes the batches, in the order they were made, so each stream's chunks stay in order and precede its end.
    /// </summary>
    private void Deliver()
    {
        if (outbox.Count == 0) return;
        deliveries.Enqueue(outbox);
        outbox = [];
        if (Interlocked.CompareExchange(ref delivering, 1, 0) == 0)
            ThreadPool.UnsafeQueueUserWorkItem(static engine => engine.WriteDeliveries(), this, preferLocal: false);
    }

    /// <summary>Writes every queued batch; called by whoever set <see cref="delivering"/>, which it clears when it finds the queue empty.</summary>
    private void WriteDeliveries()
    {
        while (true)
        {
            while (deliveries.TryDequeue(out var batch))
                foreach (var write in batch)
                {
                    try { write(); }
                    catch (Exception e) { Console.Error.WriteLine($"serving: a stream's reader failed: {e}"); } // a reader's bug must not stop the others' streams
                }
            Volatile.Write(ref delivering, 0);
            // A batch queued after the last TryDequeue but before the flag cleared found the flag set and left it to us.
            if (deliveries.IsEmpty || Interlocked.CompareExchange(ref delivering, 1, 0) != 0) return;
        }
    }

    /// <summary>
    /// Frees a row so that rows 0..n−1 stay the live ones, decoding rows first: the last decoding row moves into a freed
    /// decoding row and the last prefilling row into the hole that leaves (that prompt is then the next one prefilled).
    /// </summary>
    private void Release(int row)
    {
        int last = active.Count - 1;
        if (row < decoding)
        {
            Move(--decoding, row);
            row = decoding;
        }
        Move(last, row);
        active.RemoveAt(last);

        void Move(int from, int to)
        {
            if (from == to) { cache.ClearRow(to); return; }
            cache.MoveRow(from, to);
            active[to] = active[from];
        }
    }

    /// <summary>Stops taking requests, finishes every queued and running one, then releases the cache.</summary>
    public void Dispose()
    {
        lock (gate)
        {
            if (stopping) return;
            stopping = true;
            Monitor.Pulse(gate);
        }
        scheduler.Join();
        // Every stream is complete when Dispose returns: the last deliveries are written here if no work item holds them.
        var wait = new SpinWait();
        while (!deliveries.IsEmpty || Volatile.Read(ref delivering) != 0)
        {
            if (Interlocked.CompareExchange(ref delivering, 1, 0) == 0) WriteDeliveries();
            else wait.SpinOnce();
        }
        cache.Dispose();
    }

    private sealed class Sequence
    {
        private readonly ServingEngine engine;

        public Sequence(ServingEngine engine, CompletionRequest request, DecodingSequence decoding, CancellationToken cancel, bool readersRunInline)
        {
            this.engine = engine;
            Request = request;
            Decoding = decoding;
            Cancel = cancel;
            Output = Channel.CreateUnbounded<CompletionChunk>(new()
                { SingleReader = true, SingleWriter = true, AllowSynchronousContinuations = readersRunInline });
        }

        public CompletionRequest Request { get; }
        public DecodingSequence Decoding { get; }
        public CancellationToken Cancel { get; }
        public Channel<CompletionChunk> Output { get; }
        public Stopwatch SinceSubmitted { get; } = Stopwatch.StartNew();
        public int LastToken { get; set; }
        public int Prefilled { get; set; }               // prompt tokens in the cache so far
        public bool IsDone { get; private set; }

        /// <summary>
        /// Sends the text that can no longer change: the decoding core found any stop string and cut the text there (it is
        /// not returned, as in OpenAI's API); text that may be the start of a stop string, or a split UTF-8 character,
        /// waits for the next token.
        /// </summary>
        public void Emit(GeneratedToken? token, string? reason)
        {
            string delta = Decoding.NextText();
            var tokens = token is null ? (IReadOnlyList<GeneratedToken>)[] : [token];
            if (delta.Length > 0 || tokens.Count > 0 || reason is not null)
            {
                var chunk = new CompletionChunk(delta, tokens, reason, Request.PromptIds.Length, Decoding.Generated.Count);
                engine.outbox.Add(() => Output.Writer.TryWrite(chunk));
            }
            if (reason is not null) Finish();
        }

        /// <summary>Ends the sequence (a cancelled one just closes its stream) and frees its generator.</summary>
        public void Finish()
        {
            IsDone = true;
            engine.outbox.Add(() => Output.Writer.TryComplete());
            Decoding.Dispose();
        }

        public void Fail(Exception e)
        {
            IsDone = true;
            engine.outbox.Add(() => Output.Writer.TryComplete(e));
            Decoding.Dispose();
        }
    }
}
