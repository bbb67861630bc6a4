namespace TianGong.Training;

internal readonly record struct Rgb(byte R, byte G, byte B);

/// <summary>An RGB pixel buffer with just the drawing a line chart needs: rectangles, thick lines and 5x7 bitmap text.</summary>
internal sealed class RgbCanvas
{
    public int Width { get; }
    public int Height { get; }

    /// <summary>Row-major, 3 bytes per pixel, top row first: the layout PNG rows use.</summary>
    public byte[] Pixels { get; }

    public RgbCanvas(int width, int height, Rgb background)
    {
        (Width, Height) = (width, height);
        Pixels = new byte[width * height * 3];
        FillRect(0, 0, width, height, background);
    }

    public Rgb this[int x, int y] => new(Pixels[(y * Width + x) * 3], Pixels[(y * Width + x) * 3 + 1], Pixels[(y * Width + x) * 3 + 2]);

    public void SetPixel(int x, int y, Rgb color)
    {
        if ((uint)x >= (uint)Width || (uint)y >= (uint)Height) return; // clip silently: callers draw near the edges
        int i = (y * Width + x) * 3;
        (Pixels[i], Pixels[i + 1], Pixels[i + 2]) = (color.R, color.G, color.B);
    }

    public void FillRect(int x, int y, int width, int height, Rgb color)
    {
        for (int row = y; row < y + height; row++)
            for (int col = x; col < x + width; col++)
                SetPixel(col, row, color);
    }

    public void StrokeRect(int x, int y, int width, int height, Rgb color)
    {
        FillRect(x, y, width, 1, color);
        FillRect(x, y + height - 1, width, 1, color);
        FillRect(x, y, 1, height, color);
        FillRect(x + width - 1, y, 1, height, color);
    }

    /// <summary>Bresenham's line, stamping a <paramref name="thickness"/>-pixel square at each step.</summary>
    public void Line(int x0, int y0, int x1, int y1, Rgb color, int thickness = 1)
    {
        int dx = Math.Abs(x1 - x0), dy = -Math.Abs(y1 - y0);
        int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
        int error = dx + dy;
        int half = thickness / 2;
        while (true)
        {
            FillRect(x0 - half, y0 - half, thickness, thickness, color);
            if (x0 == x1 && y0 == y1) return;
            int doubled = 2 * error;
            if (doubled >= dy) { error += dy; x0 += sx; }
            if (doubled <= dx) { error += dx; y0 += sy; }
        }
    }

    public const int GlyphWidth = 5, GlyphHeight = 7;

    /// <summary>Width in pixels of <paramref name="text"/> at <paramref name="scale"/>, one blank column between glyphs.</summary>
    public static int MeasureText(string text, int scale) => text.Length == 0 ? 0 : (text.Length * (GlyphWidth + 1) - 1) * scale;

    /// <summary>Draws text with its top-left corner at (x, y). Characters without a glyph draw as blanks.</summary>
    public void Text(int x, int y, string text, Rgb color, int scale = 2)
    {
        foreach (char c in text)
        {
            if (Font.TryGetValue(c, out var rows))
            {
                for (int row = 0; row < GlyphHeight; row++)
                    for (int col = 0; col < GlyphWidth; col++)
                        if ((rows[row] >> (GlyphWidth - 1 - col) & 1) != 0)
                            FillRect(x + col * scale, y + row * scale, scale, scale, color);
            }
            x += (GlyphWidth + 1) * scale;
        }
    }

    // 5x7 glyphs, one byte per row, bit 4 = leftmost pixel. Only what tick labels, axis titles and the legend use.
    private static readonly Dictionary<char, byte[]> Font = new()
    {
        ['0'] = [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        ['1'] = [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        ['2'] = [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        ['3'] = [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        ['4'] = [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        ['5'] = [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        ['6'] = [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        ['7'] = [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        ['8'] = [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        ['9'] = [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ['.'] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ['-'] = [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ['+'] = [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        ['a'] = [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        ['e'] = [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        ['i'] = [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        ['k'] = [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        ['l'] = [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        ['n'] = [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        ['o'] = [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        ['p'] = [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        ['r'] = [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        ['s'] = [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        ['t'] = [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        ['v'] = [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04],
    };
}
