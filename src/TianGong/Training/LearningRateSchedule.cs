namespace TianGong.Training;

/// <summary>Linear warmup to the peak rate, then cosine decay to the minimum at the last step (nanoGPT's get_lr).</summary>
public sealed record LearningRateSchedule(double Peak, double Min, int WarmupSteps, int TotalSteps)
{
    /// <summary>The rate for update number <paramref name="step"/> (0-based).</summary>
    public double At(long step)
    {
        if (step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
        if (step >= TotalSteps) return Min;
        double progress = (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
        return Min + 0.5 * (1 + Math.Cos(Math.PI * progress)) * (Peak - Min);
    }
}
