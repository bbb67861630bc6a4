using TianGong.Models;
using TianGong.Models.Layers;

namespace TianGong.Tests.Models;

public class DecoderContractTests
{
    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void Ids_and_the_same_ids_embeddings_give_identical_logits(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var _ = no_grad();
        using var ids = randint(0, 64, [2, 9], dtype: ScalarType.Int64);
        using var fromIds = model.Forward(new DecoderInput { InputIds = ids });
        using var embeds = model.EmbedTokens(ids);                                              // (B, T, C)
        using var fromEmbeds = model.Forward(new DecoderInput { InputsEmbeds = embeds });
        Assert.True(fromIds.Logits.eq(fromEmbeds.Logits).all().item<bool>());
    }

    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void Hidden_states_are_the_embeddings_each_layer_and_the_normed_last_as_transformers_orders_them(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var _ = no_grad();
        using var ids = randint(0, 64, [1, 7], dtype: ScalarType.Int64);
        using var output = model.Forward(new DecoderInput { InputIds = ids, OutputHiddenStates = true });
        Assert.Equal(model.Config.LayerCount + 1, output.HiddenStates!.Count);
        Assert.All(output.HiddenStates, h => Assert.Equal([1L, 7, model.Config.ModelWidth], h.shape));
        using var last = model.Hidden(ids);
        Assert.True(output.HiddenStates[^1].eq(last).all().item<bool>());
        Assert.Null(output.AuxLoss);
        Assert.Null(model.Forward(DecoderInput.Ids(ids)).HiddenStates);
    }

    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void A_left_padded_row_with_its_mask_and_positions_equals_the_row_alone(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var _ = no_grad();
        long[] shortRow = [5, 9, 2, 7], longRow = [1, 3, 3, 8, 6, 4, 2, 11, 12];
        int pad = longRow.Length - shortRow.Length;
        using var ids = tensor([.. Enumerable.Repeat(0L, pad), .. shortRow, .. longRow], [2, longRow.Length]);
        using var mask = tensor([.. Enumerable.Repeat(0L, pad), .. Enumerable.Repeat(1L, shortRow.Length), .. Enumerable.Repeat(1L, longRow.Length)], [2, longRow.Length]);
        using var positions = AttentionContext.PositionsFromMask(mask, longRow.Length);
        Assert.Equal([1L, 1, 1, 1, 1, 0, 1, 2, 3], positions[0].data<long>().ToArray());
        using var batch = model.Forward(new DecoderInput { InputIds = ids, AttentionMask = mask, PositionIds = positions }).Logits;

        using var alone = model.forward(tensor(shortRow).unsqueeze(0));                          // (1, 4, V)
        using var longAlone = model.forward(tensor(longRow).unsqueeze(0));
        double shortDiff = (batch[0, pad..] - alone[0]).abs().max().item<float>();
        double longDiff = (batch[1] - longAlone[0]).abs().max().item<float>();
        Assert.True(shortDiff < 1e-5, $"padded row differs by {shortDiff}");
        Assert.True(longDiff < 1e-5, $"unpadded row differs by {longDiff}");
        Assert.False(batch.isnan().any().item<bool>(), "padding positions must stay finite");
    }

    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void A_padded_prompt_continued_through_the_cache_equals_the_prompt_alone(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var _ = no_grad();
        long[] prompt = [4, 8, 15], next = [16, 23];
        using var cache = model.CreateCache(1, 16);
        using var prefillMask = tensor(new long[] { 0, 0, 1, 1, 1 }).unsqueeze(0);
        model.Forward(new DecoderInput
        {
            InputIds = tensor(new long[] { 0, 0, 4, 8, 15 }).unsqueeze(0), AttentionMask = prefillMask,
            PositionIds = AttentionContext.PositionsFromMask(prefillMask, 5), Cache = cache,
        }).Dispose();
        using var mask = tensor(new long[] { 0, 0, 1, 1, 1, 1, 1 }).unsqueeze(0);
        using var step = model.Forward(new DecoderInput
        {
            InputIds = tensor(next).unsqueeze(0), AttentionMask = mask, PositionIds = AttentionContext.PositionsFromMask(mask, 2), Cache = cache,
        }).Logits;
        using var alone = model.forward(tensor([.. prompt, .. next]).unsqueeze(0));
        double diff = (step[0] - alone[0, 3..]).abs().max().item<float>();
        Assert.True(diff < 1e-5, $"differs by {diff}");
    }

    [Fact]
    public void Bad_inputs_name_what_is_wrong()
    {
        using var model = TestModels.Create("llama");
        using var ids = zeros([1, 3], ScalarType.Int64);
        Assert.Contains("exactly one of input_ids and inputs_embeds",
            Assert.Throws<TianGongException>(() => model.Forward(new DecoderInput())).Message);
        Assert.Contains("attention_mask: expected shape [1, 3]",
            Assert.Throws<TianGongException>(() => model.Forward(new DecoderInput { InputIds = ids, AttentionMask = ones(1, 5) })).Message);
    }
}
