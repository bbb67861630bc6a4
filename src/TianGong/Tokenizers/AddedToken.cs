namespace TianGong.Tokenizers;

/// <summary>An entry of tokenizer.json's <c>added_tokens</c>: matched literally in text, never split by BPE.</summary>
public sealed record AddedToken(int Id, string Content, bool Special = true);
