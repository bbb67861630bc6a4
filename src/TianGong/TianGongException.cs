namespace TianGong;

/// <summary>An error TianGong detected itself (bad file, bad config), as opposed to a bug or an I/O failure.</summary>
public class TianGongException : Exception
{
    public TianGongException() { }
    public TianGongException(string message) : base(message) { }
    public TianGongException(string message, Exception innerException) : base(message, innerException) { }
}
