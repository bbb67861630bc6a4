namespace TianGong;

/// <summary>
/// An error the user can act on (missing dataset, inconsistent files, bad option): the message says what
/// was expected and where, so the CLI can print it without a stack trace.
/// </summary>
public class TianGongException : Exception
{
    public TianGongException() { }

    public TianGongException(string message) : base(message) { }

    public TianGongException(string message, Exception innerException) : base(message, innerException) { }
}
