"""The PyTorch peer of `musiclm-jax bench decode` / `bench train`: a Hugging Face Llama of the same shape.

Not a project dependency: run it in a throwaway venv (see benchmarks/peers/README.md).

  python benchmarks/peers/hf_llama.py decode --layers=8 --d_model=512 --heads=8 --head_dim=64 \
      --d_ff=2048 --vocab=13440 --batch_sizes=1,8 --context=128 --new_tokens=256
  python benchmarks/peers/hf_llama.py train --layers=8 ... --batch_size=8 --length=762

`LlamaForCausalLM.generate` with its KV cache, sampling at temperature 1 (no top-k/top-p), fp32,
`torch.set_num_threads(--threads)`. Prints one JSON line per measurement (median of --repeats
after a warm-up), so that the two sides can be run alternately by one driver.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import transformers


def _model(args: argparse.Namespace) -> transformers.LlamaForCausalLM:
  config = transformers.LlamaConfig(
    vocab_size=args.vocab,
    hidden_size=args.d_model,
    intermediate_size=args.d_ff,
    num_hidden_layers=args.layers,
    num_attention_heads=args.heads,
    num_key_value_heads=args.heads,
    head_dim=args.head_dim,
    max_position_embeddings=args.context + args.new_tokens + 8,
    tie_word_embeddings=False,
  )
  torch.manual_seed(0)
  return transformers.LlamaForCausalLM(config).float()


def _median_seconds(fn, repeats: int) -> float:
  fn()  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def decode(args: argparse.Namespace) -> None:
  model = _model(args).eval()
  for batch in args.batch_sizes:
    prompt = torch.randint(2, args.vocab, (batch, args.context))
    mask = torch.ones_like(prompt)

    def run(prompt=prompt, mask=mask):
      with torch.inference_mode():
        model.generate(
          input_ids=prompt,
          attention_mask=mask,
          do_sample=True,
          temperature=1.0,
          top_k=0,
          top_p=1.0,
          max_new_tokens=args.new_tokens,
          min_new_tokens=args.new_tokens,
          pad_token_id=0,
          eos_token_id=None,
        )

    seconds = _median_seconds(run, args.repeats)
    print(
      json.dumps(
        dict(
          side="peer",
          kind="decode",
          batch_size=batch,
          context=args.context,
          new_tokens=args.new_tokens,
          seconds=seconds,
          tokens_per_s=batch * args.new_tokens / seconds,
        )
      ),
      flush=True,
    )


def train(args: argparse.Namespace) -> None:
  model = _model(args).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
  tokens = torch.randint(2, args.vocab, (args.batch_size, args.length))

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    optimizer.step()

  seconds = _median_seconds(step, args.repeats)
  print(
    json.dumps(
      dict(
        side="peer",
        kind="train",
        batch_size=args.batch_size,
        length=args.length,
        seconds=seconds,
        tokens_per_s=args.batch_size * args.length / seconds,
      )
    ),
    flush=True,
  )


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("kind", choices=("decode", "train"))
  for name, default in (
    ("layers", 8),
    ("d_model", 512),
    ("heads", 8),
    ("head_dim", 64),
    ("d_ff", 2048),
    ("vocab", 13440),
    ("context", 128),
    ("new_tokens", 256),
    ("batch_size", 8),
    ("length", 762),
    ("repeats", 3),
    ("threads", 2),
  ):
    p.add_argument(f"--{name}", type=int, default=default)
  p.add_argument("--batch_sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
  args = p.parse_args()
  torch.set_num_threads(args.threads)
  {"decode": decode, "train": train}[args.kind](args)


if __name__ == "__main__":
  main()
