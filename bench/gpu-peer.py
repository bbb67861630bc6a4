# The peer of `TianGong.Bench gpu` on the same GPU, run by bench/gpu-with-pytorch.sh: Hugging Face transformers'
# GPT2LMHeadModel with configs/poetry-gpu.json's shape (1024x24, 16 heads, vocab 16384, tied head), bf16 weights,
# torch.optim.AdamW (its default multi-tensor path), grad clip 1.0, random tokens, batch 32x1024: the bench's training
# work. Then greedy KV-cache decoding at batch 1 and 16 (16-token prompt, 127 timed steps), with libtorch's default
# attention backends and with cuDNN's attention switched off (it builds a plan for every new key length).
import os, time, torch, transformers
from transformers import GPT2Config, GPT2LMHeadModel

STEPS, BATCH, T, V = int(os.environ.get("STEPS", "20")), int(os.environ.get("BATCH", "32")), 1024, 16384
print(f"peer: torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}")

def config():
    return GPT2Config(n_embd=1024, n_layer=24, n_head=16, n_positions=T, vocab_size=V, activation_function="gelu_new",
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)

def peak():
    best = 0.0
    for n in (4096, 8192, 16384):
        a, b = (torch.randn(n, n, dtype=torch.bfloat16, device="cuda") for _ in range(2))
        a @ b; torch.cuda.synchronize(); reps = max(3, int(2e13 / (2.0 * n ** 3)))
        t0 = time.perf_counter()
        for _ in range(reps): a @ b
        torch.cuda.synchronize(); best = max(best, reps * 2.0 * n ** 3 / (time.perf_counter() - t0) / 1e12)
    return best

pk = peak()
print(f"peer: bf16 matmul peak {pk:.1f} TFLOP/s")
torch.manual_seed(0)
model = GPT2LMHeadModel(config()).to(torch.bfloat16).cuda()
n = sum(p.numel() for p in model.parameters())
flops_per_token = 6.0 * n + 12.0 * 24 * 1024 * T  # the bench's estimate
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
data = torch.randint(0, V, (BATCH, T + 1), device="cuda")
x, y = data[:, :T].contiguous(), data[:, 1:].contiguous()

def step():
    logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.float().view(-1, V), y.view(-1))
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad(set_to_none=True)

step(); step(); torch.cuda.synchronize(); t0 = time.perf_counter()
for _ in range(STEPS): step()
torch.cuda.synchronize(); s = (time.perf_counter() - t0) / STEPS
achieved = BATCH * T / s * flops_per_token / 1e12
print(f"peer training ({model.config._attn_implementation} attention): {n / 1e6:.1f}M parameters, batch {BATCH}x{T}, "
      f"{BATCH * T / s:,.0f} tokens/s ({s:.3f} s/step), {achieved:.1f} TFLOP/s, MFU {achieved / pk:.1%} of the measured peak")
del opt; model.eval(); torch.cuda.empty_cache()

for cudnn in (True, False):
    torch.backends.cuda.enable_cudnn_sdp(cudnn)
    for b in (1, 16):
        with torch.no_grad():
            out = model(input_ids=torch.randint(0, V, (b, 16), device="cuda"), use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True); torch.cuda.synchronize(); t0 = time.perf_counter()
            for _ in range(127):
                out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            queued = time.perf_counter() - t0; torch.cuda.synchronize(); s = time.perf_counter() - t0
        print(f"peer decode batch {b} (cuDNN attention {'on' if cudnn else 'off'}): {b * 127 / s:,.0f} tokens/s "
              f"({s * 1000 / 127:.2f} ms per step; the host queued a step in {queued * 1000 / 127:.2f} ms)")
