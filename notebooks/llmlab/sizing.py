"""Back-of-the-envelope numbers for LLMs: memory for the parameters, compute for training and inference."""

BYTES_PER_PARAMETER = {"fp32": 4.0, "fp16 / bf16": 2.0, "int8": 1.0, "int4": 0.5}

# Llama 2 70B, as its training was described publicly (and retold in many introductions to LLMs).
LLAMA2_70B = {
    "parameters": 70e9,
    "training tokens": 2e12,
    "training text (TB)": 10,
    "GPUs": 6000,
    "days": 12,
    "cost (USD)": 2e6,
}


def memory_gb(parameters: float, precision: str) -> float:
    """Gigabytes (10^9 bytes) to hold the parameters alone (no activations, no KV cache) at a precision."""
    if precision not in BYTES_PER_PARAMETER:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(BYTES_PER_PARAMETER)}")
    return parameters * BYTES_PER_PARAMETER[precision] / 1e9


def training_flops(parameters: float, tokens: float) -> float:
    """About 6 FLOPs per parameter per training token: 2 for the forward pass, 4 for the backward pass."""
    return 6 * parameters * tokens


def inference_flops_per_token(parameters: float) -> float:
    """About 2 FLOPs per parameter for each generated token (one multiply and one add per weight)."""
    return 2 * parameters


def check_memory_exercise(fn) -> bool:
    """Checker for notebook 00's exercise: fn(parameters, bits) returns gigabytes."""
    cases = [(13e9, 4, 6.5), (7e9, 16, 14.0), (70e9, 8, 70.0), (1.5e9, 32, 6.0)]
    try:
        for parameters, bits, expected in cases:
            got = fn(parameters, bits)
            if abs(got - expected) > 1e-6 * expected:
                print(f"✗ {parameters / 1e9:g}B parameters at {bits} bits: expected {expected} GB, got {got}")
                print("  hint: bits / 8 gives bytes per parameter; 1 GB = 1e9 bytes")
                return False
    except NotImplementedError:
        print("… not done yet: fill in the function (hint: parameters × bits / 8 bytes, in units of 1e9)")
        return False
    print("✓ correct: e.g. 13B parameters at 4 bits take 6.5 GB")
    return True
