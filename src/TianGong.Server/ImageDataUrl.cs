namespace TianGong.Server;

/// <summary>
/// An image sent inline as OpenAI's APIs take it: <c>data:image/png;base64,...</c> (or image/jpeg, ...). Only the
/// base64 form is accepted; the request body limit already bounds its size, and <see cref="MaxBytes"/> bounds one
/// image before any base64 or pixel decoding.
/// </summary>
internal static class ImageDataUrl
{
    public const int MaxBytes = 8 << 20;

    /// <summary>The largest image, in pixels, decoded (4096 × 4096): a small PNG can declare a huge canvas.</summary>
    public const long MaxPixels = 4096L * 4096;

    public static bool IsOne(string input) => input.StartsWith("data:", StringComparison.OrdinalIgnoreCase);

    /// <summary>The encoded image bytes, or a 400 naming what is wrong with the URL.</summary>
    public static byte[] Parse(string url, string param)
    {
        int comma = url.IndexOf(',');
        if (comma < 0) throw ApiError.BadRequest($"'{param}': a data URL needs a comma before its data (data:image/png;base64,...)", param);
        var header = url[5..comma];
        var parts = header.Split(';');
        if (!parts[0].StartsWith("image/", StringComparison.OrdinalIgnoreCase))
            throw ApiError.BadRequest($"'{param}': the data URL's media type must be image/*, got '{parts[0]}'", param);
        if (!parts.Skip(1).Any(p => p.Equals("base64", StringComparison.OrdinalIgnoreCase)))
            throw ApiError.BadRequest($"'{param}': only base64 data URLs are accepted (data:{parts[0]};base64,...)", param);
        int length = url.Length - comma - 1;
        if ((long)length * 3 / 4 > MaxBytes)
            throw ApiError.BadRequest($"'{param}': the image is over {MaxBytes >> 20} MiB", param);
        var bytes = new byte[length * 3 / 4 + 3];
        if (!Convert.TryFromBase64Chars(url.AsSpan(comma + 1), bytes, out int written) || written == 0)
            throw ApiError.BadRequest($"'{param}': the data URL's base64 data is malformed or empty", param);
        return bytes[..written];
    }
}
