namespace TianGong;

/// <summary>A TianGong-level failure whose message says what went wrong and where (file, field, value).</summary>
public class TianGongException : Exception
{
    public TianGongException(string message) : base(message) { }

    public TianGongException(string message, Exception inner) : base(message, inner) { }
}
