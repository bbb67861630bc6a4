namespace TianGong;

/// <summary>
/// An error caused by the user's input (a config, a checkpoint, a dataset, a request) rather than by a bug.
/// The message names the file or field and the problem, so the CLI prints it as is, without a stack trace.
/// </summary>
public class TianGongException : Exception
{
    public TianGongException(string message) : base(message) { }
    public TianGongException(string message, Exception inner) : base(message, inner) { }
}
