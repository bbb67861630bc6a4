using TianGong.Poetry;

namespace TianGong.Data;

/// <summary>Where downloaded datasets live: <c>$TIANGONG_HOME/datasets</c>, default <c>~/.cache/tiangong/datasets</c>.</summary>
public static class DatasetLocations
{
    public const string HomeVariable = "TIANGONG_HOME";

    public static string Home()
    {
        var home = Environment.GetEnvironmentVariable(HomeVariable);
        return string.IsNullOrWhiteSpace(home)
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "tiangong")
            : home;
    }
}
