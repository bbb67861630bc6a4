using Google.Protobuf;

namespace TianGong.Tokenizers;

/// <summary>SentencePiece's piece types (<c>ModelProto.SentencePiece.Type</c>).</summary>
internal enum SentencePieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

/// <summary>One vocabulary entry of a SentencePiece model: its text, score and type; its id is its index.</summary>
internal sealed record SentencePiece(string Piece, float Score, SentencePieceType Type);

/// <summary>
/// The parts of a SentencePiece <c>tokenizer.model</c> (a serialized <c>sentencepiece.ModelProto</c>) that decide how
/// text is encoded: the pieces, the trainer spec's model type, byte fallback and special ids, and the normalizer spec.
/// Field numbers and defaults are those of google/sentencepiece's <c>src/sentencepiece_model.proto</c> (proto2):
/// ModelProto { 1 pieces, 2 trainer_spec, 3 normalizer_spec }, SentencePiece { 1 piece, 2 score (float), 3 type },
/// TrainerSpec { 3 model_type (UNIGRAM=1, BPE=2), 35 byte_fallback, 40–43 unk/bos/eos/pad_id (0, 1, 2, −1),
/// 45–48 unk/bos/eos/pad_piece }, NormalizerSpec { 1 name, 2 precompiled_charsmap, 3 add_dummy_prefix (true),
/// 4 remove_extra_whitespaces (true), 5 escape_whitespaces (true) }.
/// <para>
/// Read with Google.Protobuf's <see cref="CodedInputStream"/> rather than classes generated from the .proto: we need
/// a dozen scalar fields of a file whose schema is fixed, skipping every other field (training options, self-test
/// data) as the wire format allows; generated classes would add a protoc step to every build for that, and would
/// still leave the checks below (piece ids, types, model type) to hand-written code.
/// </para>
/// </summary>
internal sealed record SentencePieceModelFile(
    IReadOnlyList<SentencePiece> Pieces,
    SentencePieceModelFile.ModelKind Kind,
    bool ByteFallback,
    int UnkId, int BosId, int EosId, int PadId,
    string UnkPiece,
    byte[] PrecompiledCharsmap,
    bool AddDummyPrefix, bool RemoveExtraWhitespaces, bool EscapeWhitespaces)
{
    public enum ModelKind { Unigram = 1, Bpe = 2 }

    public static SentencePieceModelFile Read(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (IOException e)
        {
            throw new TianGongException($"{path}: cannot read the SentencePiece model ({e.Message})", e);
        }
        return Parse(bytes, path);
    }

    /// <summary>Parses a serialized ModelProto; anything malformed is a <see cref="TianGongException"/> naming <paramref name="where"/>.</summary>
    public static SentencePieceModelFile Parse(byte[] bytes, string where)
    {
        try
        {
            return ParseModel(bytes, where);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new TianGongException($"{where}: not a valid SentencePiece model (protobuf: {e.Message})", e);
        }
    }

    private static SentencePieceModelFile ParseModel(byte[] bytes, string where)
    {
        if (bytes.Length == 0) throw new TianGongException($"{where}: the SentencePiece model file is empty");
        var pieces = new List<SentencePiece>();
        var trainer = new TrainerFields();
        var normalizer = new NormalizerFields();
        var input = new CodedInputStream(bytes);
        bool hasTrainer = false, hasNormalizer = false;
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1:
                    if (pieces.Count > TokenizerJsonReader.MaxTokenId) throw new TianGongException($"{where}: more than {TokenizerJsonReader.MaxTokenId + 1} pieces");
                    pieces.Add(ReadPiece(Message(input, tag, "pieces", where), pieces.Count, where));
                    break;
                case 2:
                    ReadTrainerSpec(Message(input, tag, "trainer_spec", where), trainer, where);
                    hasTrainer = true;
                    break;
                case 3:
                    ReadNormalizerSpec(Message(input, tag, "normalizer_spec", where), normalizer, where);
                    hasNormalizer = true;
                    break;
                default:
                    input.SkipLastField();
                    break;
            }
        }
        if (pieces.Count == 0) throw new TianGongException($"{where}: the SentencePiece model has no pieces");
        // Every trainer writes both specs after the pieces; a file cut between two pieces would otherwise load as a
        // smaller Unigram model with default settings.
        if (!hasTrainer || !hasNormalizer)
            throw new TianGongException($"{where}: the SentencePiece model has no {(hasTrainer ? "normalizer_spec" : "trainer_spec")} (a truncated file?)");
        if (trainer.ModelType is not (1 or 2))
        {
            string name = trainer.ModelType switch { 3 => "WORD", 4 => "CHAR", _ => trainer.ModelType.ToString() };
            throw new TianGongException($"{where}: trainer_spec.model_type is {name}; TianGong reads UNIGRAM and BPE SentencePiece models");
        }
        var seen = new Dictionary<string, int>(pieces.Count, StringComparer.Ordinal);
        for (int id = 0; id < pieces.Count; id++)
        {
            if (!seen.TryAdd(pieces[id].Piece, id))
                throw new TianGongException($"{where}: the piece `{pieces[id].Piece}` appears twice (ids {seen[pieces[id].Piece]} and {id})");
        }
        if (trainer.UnkId < 0 || trainer.UnkId >= pieces.Count)
            throw new TianGongException($"{where}: trainer_spec.unk_id is {trainer.UnkId}, outside the {pieces.Count} pieces");
        if (pieces[trainer.UnkId].Type != SentencePieceType.Unknown)
            throw new TianGongException($"{where}: trainer_spec.unk_id is {trainer.UnkId}, but piece {trainer.UnkId} (`{pieces[trainer.UnkId].Piece}`) is not of type UNKNOWN");
        foreach (var (name, id) in new[] { ("bos_id", trainer.BosId), ("eos_id", trainer.EosId), ("pad_id", trainer.PadId) })
            if (id < -1 || id >= pieces.Count) throw new TianGongException($"{where}: trainer_spec.{name} is {id}, outside -1..{pieces.Count - 1}");
        return new SentencePieceModelFile(pieces, (ModelKind)trainer.ModelType, trainer.ByteFallback, trainer.UnkId, trainer.BosId,
            trainer.EosId, trainer.PadId, pieces[trainer.UnkId].Piece, normalizer.Charsmap, normalizer.AddDummyPrefix,
            normalizer.RemoveExtraWhitespaces, normalizer.EscapeWhitespaces);
    }

    /// <summary>The text of the piece with this id (bos_id, eos_id ...), or null for −1 (none).</summary>
    public string? PieceOf(int id) => id >= 0 ? Pieces[id].Piece : null;

    private sealed class TrainerFields
    {
        public int ModelType = 1, UnkId = 0, BosId = 1, EosId = 2, PadId = -1;
        public bool ByteFallback;
    }

    private sealed class NormalizerFields
    {
        public byte[] Charsmap = [];
        public bool AddDummyPrefix = true, RemoveExtraWhitespaces = true, EscapeWhitespaces = true;
    }

    private static CodedInputStream Message(CodedInputStream input, uint tag, string field, string where)
    {
        Expect(tag, WireFormat.WireType.LengthDelimited, field, where);
        return new CodedInputStream(input.ReadBytes().ToByteArray());
    }

    private static void Expect(uint tag, WireFormat.WireType type, string field, string where)
    {
        if (WireFormat.GetTagWireType(tag) != type)
            throw new TianGongException($"{where}: the SentencePiece field `{field}` has wire type {WireFormat.GetTagWireType(tag)}, expected {type}");
    }

    private static SentencePiece ReadPiece(CodedInputStream input, int id, string where)
    {
        string? piece = null;
        float score = 0;
        int type = (int)SentencePieceType.Normal;
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1: Expect(tag, WireFormat.WireType.LengthDelimited, "pieces.piece", where); piece = input.ReadString(); break;
                case 2: Expect(tag, WireFormat.WireType.Fixed32, "pieces.score", where); score = input.ReadFloat(); break;
                case 3: Expect(tag, WireFormat.WireType.Varint, "pieces.type", where); type = input.ReadEnum(); break;
                default: input.SkipLastField(); break;
            }
        }
        if (string.IsNullOrEmpty(piece)) throw new TianGongException($"{where}: piece {id} is empty (SentencePiece requires every piece to have text)");
        if (type is < 1 or > 6) throw new TianGongException($"{where}: piece {id} (`{piece}`) has type {type}; SentencePiece types run from 1 (NORMAL) to 6 (BYTE)");
        if (float.IsNaN(score)) throw new TianGongException($"{where}: piece {id} (`{piece}`) has a NaN score");
        return new SentencePiece(piece, score, (SentencePieceType)type);
    }

    private static void ReadTrainerSpec(CodedInputStream input, TrainerFields fields, string where)
    {
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 3: fields.ModelType = Varint(input, tag, "trainer_spec.model_type", where); break;
                case 35: fields.ByteFallback = Varint(input, tag, "trainer_spec.byte_fallback", where) != 0; break;
                case 40: fields.UnkId = Varint(input, tag, "trainer_spec.unk_id", where); break;
                case 41: fields.BosId = Varint(input, tag, "trainer_spec.bos_id", where); break;
                case 42: fields.EosId = Varint(input, tag, "trainer_spec.eos_id", where); break;
                case 43: fields.PadId = Varint(input, tag, "trainer_spec.pad_id", where); break;
                default: input.SkipLastField(); break;
            }
        }
    }

    private static void ReadNormalizerSpec(CodedInputStream input, NormalizerFields fields, string where)
    {
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 2:
                    Expect(tag, WireFormat.WireType.LengthDelimited, "normalizer_spec.precompiled_charsmap", where);
                    fields.Charsmap = input.ReadBytes().ToByteArray();
                    break;
                case 3: fields.AddDummyPrefix = Varint(input, tag, "normalizer_spec.add_dummy_prefix", where) != 0; break;
                case 4: fields.RemoveExtraWhitespaces = Varint(input, tag, "normalizer_spec.remove_extra_whitespaces", where) != 0; break;
                case 5: fields.EscapeWhitespaces = Varint(input, tag, "normalizer_spec.escape_whitespaces", where) != 0; break;
                default: input.SkipLastField(); break;
            }
        }
    }

    private static int Varint(CodedInputStream input, uint tag, string field, string where)
    {
        Expect(tag, WireFormat.WireType.Varint, field, where);
        return input.ReadInt32();
    }
}
