using Spectre.Console;

namespace TianGong.Cli.Commands;

/// <summary>Runs a command body and turns user errors into one red line and exit code 1 (never a stack trace).</summary>
internal static class CliRunner
{
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (AggregateException e) when (e.Flatten().InnerExceptions is [TianGongException inner])
        {
            // Parallel stages (tokenizer training, encoding) wrap the user's error; show it as is.
            return Fail(inner);
        }
        catch (TianGongException e)
        {
            return Fail(e);
        }
        catch (OperationCanceledException)
        {
            AnsiConsole.MarkupLine("[yellow]cancelled[/]");
            return 130;
        }
    }

    private static int Fail(TianGongException e)
    {
        // Plain stderr, never wrapped: the message names a file or field that users copy and scripts grep.
        Console.Error.WriteLine(Console.IsErrorRedirected ? $"error: {e.Message}" : $"\u001b[31merror:\u001b[0m {e.Message}");
        return 1;
    }

    /// <summary>Parses "1,2,3" into token ids, naming the option and the bad item on failure.</summary>
    public static int[] ParseIds(string text, string option)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ids[i]) || ids[i] < 0)
                throw new TianGongException($"{option}: '{parts[i]}' is not a token id (expected comma-separated non-negative integers)");
        if (ids.Length == 0) throw new TianGongException($"{option}: no token ids given");
        return ids;
    }
}
